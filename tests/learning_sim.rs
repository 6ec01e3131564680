// SPDX-License-Identifier: GPL-2.0-or-later
//! Learning on a seeded synthetic workload through the real budget core and
//! an in-memory ledger: how much held-but-unused money it frees, and how far an account
//! can be overdrawn under the bound. Run with `--nocapture` to see the figures.
//!
//! The bound, reasoned: a learned hold is never below `min_hold_factor × estimate`, so
//! a job that uses its whole estimate exceeds its hold by at most
//! `(1 − min_hold_factor) × estimate`. An account admits jobs while their holds fit in
//! its available money `A`, so at most `A / min_hold_factor` of estimates can be running
//! at once, and the worst overdraft they cause is `A × (1 − min) / min` (= A at 0.5).

use asbb::core::config::Config;
use asbb::core::decisions::{Budget, Decision, FOREVER};
use asbb::core::ledger::Ledger;
use asbb::core::money::Money;
use asbb::core::pricing::job::{EndState, JobCompletion, JobRequest, Resources};
use std::collections::BTreeMap;

fn config(learning: bool) -> Config {
    Config::parse(
        &format!(
            r#"
[policy]
minimum_charge = "0.01"
[partitions.debug.rates]
cpu = 0.02
[learning]
enabled = {learning}
min_hold_factor = 0.5
min_samples = 20
"#
        ),
        "sim.toml",
    )
    .unwrap()
}

/// xorshift64*: a fixed seed gives the same workload to both runs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone)]
struct SimJob {
    submit: i64,
    cpus: u32,
    limit_min: u32,
    /// Run time as a share of the limit, in percent.
    used_pct: u32,
}

/// Users over-ask: most jobs use 15-70% of their time limit, one in ten runs to it.
fn workload(seed: u64, n: usize, t0: i64) -> Vec<SimJob> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| SimJob {
            submit: t0 + i as i64 * 600,
            cpus: 1 + rng.below(32) as u32,
            limit_min: 60 + rng.below(23 * 60) as u32,
            used_pct: if rng.below(10) == 0 { 100 } else { 15 + rng.below(56) as u32 },
        })
        .collect()
}

fn request(account: &str, j: &SimJob) -> JobRequest {
    JobRequest {
        user: "sim".into(),
        uid: 1000,
        account: account.into(),
        partition: "debug".into(),
        resources: Resources { nodes: 1, cpus: j.cpus, mem_mb: 0, gpus: Default::default() },
        time_limit_min: j.limit_min,
        array_tasks: 1,
        qos: None,
        job_id: None,
        job_name: None,
    }
}

fn completion(req: &JobRequest, token: &str, job_id: u32, start: i64, end: i64) -> JobCompletion {
    JobCompletion {
        cluster: "sim".into(),
        job_id,
        hold_token: Some(token.into()),
        user: req.user.clone(),
        account: req.account.clone(),
        partition: req.partition.clone(),
        state: EndState::Completed,
        start_time: start,
        end_time: end,
        allocated: Some(req.resources.clone()),
        task_count: 1,
        submit_time: start,
        run_index: 0,
        qos: None,
    }
}

#[derive(Debug, Default)]
struct Figures {
    jobs: u64,
    estimated: i64,
    held: i64,
    charged: i64,
    /// Σ (hold − actual) over jobs whose hold covered their cost.
    held_unused: i64,
    /// Time-weighted open holds: micro-dollar-seconds.
    hold_seconds: i128,
    peak_held: i64,
    under_held: u64,
    worst_excess: i64,
    /// max over jobs of (actual − hold) − (1 − min) × estimate: must be ≤ 0.
    worst_vs_bound: i64,
}

fn simulate(learning: bool, jobs: &[SimJob], t0: i64) -> Figures {
    let cfg = config(learning);
    let min_ppm = cfg.learning.min_hold_factor_ppm;
    let mut b = Budget::with_ledger(cfg, Ledger::in_memory().unwrap());
    b.create_account("sim", Money::from_dollars(1_000_000).unwrap(), t0 - 86_400, FOREVER, Money::ZERO, "sim", t0)
        .unwrap();
    // Events: (time, 0 = end / 1 = submit, job index); ends first at the same second.
    let mut events: BTreeMap<(i64, u8, usize), ()> = BTreeMap::new();
    for (i, j) in jobs.iter().enumerate() {
        events.insert((j.submit, 1, i), ());
    }
    let mut tokens: BTreeMap<usize, (String, JobRequest)> = BTreeMap::new();
    let mut f = Figures::default();
    let mut last_t = t0;
    let mut open_held = 0i64;
    while let Some(((t, kind, i), ())) = events.pop_first() {
        f.hold_seconds += open_held as i128 * (t - last_t) as i128;
        last_t = t;
        let j = &jobs[i];
        if kind == 1 {
            let req = request("sim", j);
            match b.check_and_hold(&req, t).unwrap() {
                Decision::Accept { token, .. } => {
                    let end = t + (j.limit_min as i64 * 60 * j.used_pct as i64) / 100;
                    events.insert((end, 0, i), ());
                    tokens.insert(i, (token, req));
                }
                d => panic!("the simulated account never runs short: {d:?}"),
            }
        } else {
            let (token, req) = tokens.remove(&i).unwrap();
            let start = j.submit;
            let job = b.job(&token).unwrap().unwrap();
            b.reconcile(&completion(&req, &token, i as u32 + 1, start, t), t).unwrap();
            let after = b.job(&token).unwrap().unwrap();
            let (estimate, hold, actual) = (job.estimate.micros(), job.hold_placed.micros(), after.charged.micros());
            f.jobs += 1;
            f.estimated += estimate;
            f.held += hold;
            f.charged += actual;
            if actual <= hold {
                f.held_unused += hold - actual;
            } else {
                f.under_held += 1;
                f.worst_excess = f.worst_excess.max(actual - hold);
            }
            if actual <= estimate {
                let bound = ((1_000_000 - min_ppm) as i128 * estimate as i128 / 1_000_000) as i64;
                f.worst_vs_bound = f.worst_vs_bound.max(actual - hold - bound);
            }
        }
        open_held = b.balance("sim", t).unwrap().held.micros();
        f.peak_held = f.peak_held.max(open_held);
    }
    assert!(b.verify().unwrap().is_clean());
    f
}

fn dollars(micros: i64) -> String {
    Money::from_micros(micros).to_string()
}

#[test]
fn learning_frees_held_money_within_the_bound() {
    let t0 = 1_772_366_400;
    let jobs = workload(0x5eed_a5bb, 1_500, t0);
    let off = simulate(false, &jobs, t0);
    let on = simulate(true, &jobs, t0);
    let span_s = (jobs.last().unwrap().submit - t0) as i128;
    println!("seeded workload: {} jobs, one every 10 minutes, 1-32 CPUs, limits 1-24 h, 90% use 15-70% of the limit, 10% all of it", jobs.len());
    for (name, f) in [("learning off", &off), ("learning on ", &on)] {
        println!(
            "{name}: estimated {}, held at submit {}, charged {}, held-but-unused {}, average open holds {}, peak open holds {}, under-held jobs {} (worst excess {})",
            dollars(f.estimated),
            dollars(f.held),
            dollars(f.charged),
            dollars(f.held_unused),
            dollars((f.hold_seconds / span_s) as i64),
            dollars(f.peak_held),
            f.under_held,
            dollars(f.worst_excess),
        );
    }
    let freed = off.held - on.held;
    println!(
        "learning freed {} of holds ({:.1}% of what was held), average open holds down {:.1}%, peak down {:.1}%",
        dollars(freed),
        freed as f64 * 100.0 / off.held as f64,
        (off.hold_seconds - on.hold_seconds) as f64 * 100.0 / off.hold_seconds as f64,
        (off.peak_held - on.peak_held) as f64 * 100.0 / off.peak_held as f64,
    );
    // Same work, same charges: learning only changes holds.
    assert_eq!(off.charged, on.charged);
    assert_eq!(off.estimated, on.estimated);
    assert_eq!(off.held, off.estimated, "without learning every hold is the estimate");
    assert_eq!(off.under_held, 0);
    assert!(on.held < off.held && on.peak_held < off.peak_held && on.hold_seconds < off.hold_seconds);
    // p90 of the ratios sits near 0.7-1.0 here, so the factor rarely reaches the floor;
    // whatever it is, no job exceeds its hold by more than (1 − min) × estimate.
    assert!(on.worst_vs_bound <= 0, "a job exceeded its hold by more than the bound");
}

/// The worst case: learning pushed to the floor (every training job used a tenth of
/// its estimate), then jobs that use all of theirs, as many as the holds let in.
#[test]
fn worst_case_overdraft_is_available_times_one_minus_min_over_min() {
    let t0 = 1_772_366_400;
    let mut b = Budget::with_ledger(config(true), Ledger::in_memory().unwrap());
    b.create_account("adv", Money::from_dollars(100).unwrap(), t0 - 86_400, FOREVER, Money::ZERO, "t", t0).unwrap();
    let train = SimJob { submit: t0, cpus: 10, limit_min: 600, used_pct: 10 };
    for i in 0..25 {
        let req = request("adv", &train);
        let t = t0 + i * 60;
        let Decision::Accept { token, .. } = b.check_and_hold(&req, t).unwrap() else { panic!() };
        b.reconcile(&completion(&req, &token, i as u32 + 1, t, t + 3_600), t + 3_600).unwrap();
    }
    let t = t0 + 86_400;
    let available = b.balance("adv", t).unwrap().available.micros();
    // Jobs estimated at $2.00 each (10 CPUs × 10 h × $0.02) now hold $1.00.
    let mut running = Vec::new();
    loop {
        match b.check_and_hold(&request("adv", &train), t).unwrap() {
            Decision::Accept { token, .. } => running.push(token),
            Decision::Reject { .. } => break,
            d => panic!("{d:?}"),
        }
    }
    let estimate = 2_000_000i64;
    let holds = running.len() as i64 * estimate / 2;
    assert!(holds <= available && available - holds < estimate / 2, "admitted until the holds filled available");
    for (k, token) in running.iter().enumerate() {
        let req = request("adv", &train);
        b.reconcile(&completion(&req, token, 1_000 + k as u32, t, t + 600 * 60), t + 600 * 60).unwrap();
    }
    let after = b.balance("adv", t + 600 * 60).unwrap();
    let overdraft = -after.available.micros();
    let bound = available * (1_000_000 - 500_000) / 500_000;
    println!(
        "worst case: available {} before, {} jobs admitted at a $1.00 hold for a $2.00 estimate, all used their whole estimate: available after {} (overdrawn {}; bound A × (1 − min) / min = {}; per job (1 − min) × estimate = $1.00)",
        dollars(available),
        running.len(),
        after.available,
        dollars(overdraft),
        dollars(bound)
    );
    assert!(overdraft > 0 && overdraft <= bound);
    assert!(bound - overdraft < estimate, "the bound is reached to within one job");
    assert!(b.verify().unwrap().is_clean());
}

/// `asbb-admin report accuracy` replays a ledger's samples per group.
#[test]
fn report_accuracy_shows_before_and_after_learning() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.db");
    let cfg_path = dir.path().join("asbb.toml");
    let text = format!(
        "ledger = \"{}\"\n[partitions.debug.rates]\ncpu = 0.02\n[learning]\nenabled = false\nmin_samples = 5\n",
        ledger.display()
    );
    std::fs::write(&cfg_path, &text).unwrap();
    let t0 = 1_772_366_400;
    let mut b = Budget::open(Config::load(&cfg_path).unwrap(), asbb::core::ledger::OpenMode::CreateIfMissing).unwrap();
    b.create_account("chem", Money::from_dollars(1_000).unwrap(), t0 - 86_400, FOREVER, Money::ZERO, "t", t0).unwrap();
    // Ten jobs of 10 CPUs × 10 h ($2.00 estimate) that used 30%..75% of it.
    for i in 0..10u32 {
        let j = SimJob { submit: t0, cpus: 10, limit_min: 600, used_pct: 30 + 5 * i };
        let req = request("chem", &j);
        let t = t0 + i as i64 * 60;
        let Decision::Accept { token, .. } = b.check_and_hold(&req, t).unwrap() else { panic!() };
        let end = t + 600 * 60 * j.used_pct as i64 / 100;
        b.reconcile(&completion(&req, &token, i + 1, t, end), end).unwrap();
    }
    drop(b);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_asbb-admin"))
        .args(["report", "accuracy", "-A", "chem"])
        .env("ASBB_CONFIG", &cfg_path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    println!("{text}");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let row = text.lines().nth(1).unwrap();
    // 10 samples; ratios 0.30..0.75: median 0.50, p90 0.70; the factor after 5 samples is
    // their p90 (0.45 → clamped to 0.50) and rises with the later samples.
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..6], &["chem", "debug", "-", "10", "0.50", "0.70"], "{row}");
    assert!(text.contains("Learning is off"), "{text}");
    let json = std::process::Command::new(env!("CARGO_BIN_EXE_asbb-admin"))
        .args(["--format", "json", "report", "accuracy"])
        .env("ASBB_CONFIG", &cfg_path)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v[0]["samples"], 10);
    let freed = Money::parse(v[0]["freed"].as_str().unwrap()).unwrap();
    assert!(freed.micros() > 0, "{v}");
}

/// Samples are grouped by research domain: jobs that name `domain=climate` learn from
/// climate jobs only, and jobs that name no domain from the others.
#[test]
fn learning_groups_samples_by_research_domain() {
    let t0 = 1_800_000_000;
    let mut b = Budget::with_ledger(config(true), Ledger::in_memory().unwrap());
    b.create_account("sim", Money::from_dollars(1_000_000).unwrap(), t0 - 86_400, FOREVER, Money::ZERO, "sim", t0)
        .unwrap();
    let climate =
        asbb::core::pricing::metadata::JobMetadata { research_domain: Some("climate".into()), ..Default::default() };
    let none = asbb::core::pricing::metadata::JobMetadata::default();
    let job = SimJob { submit: t0, cpus: 4, limit_min: 600, used_pct: 25 };
    let req = request("sim", &job);
    let submit =
        |b: &mut Budget, meta: &asbb::core::pricing::metadata::JobMetadata, t: i64| match b.submit(&req, meta, t) {
            Ok(Decision::Accept { token, estimate, .. }) => (token, estimate),
            other => panic!("{other:?}"),
        };
    // 20 climate jobs (min_samples) that use a quarter of their time limit.
    for i in 0..20 {
        let t = t0 + i * 60;
        let (token, _) = submit(&mut b, &climate, t);
        b.reconcile(&completion(&req, &token, i as u32 + 1, t, t + 600 * 60 / 4), t + 9000).unwrap();
    }
    let (token, estimate) = submit(&mut b, &climate, t0 + 10_000);
    let climate_hold = b.job(&token).unwrap().unwrap().hold_placed;
    assert_eq!(climate_hold.micros(), estimate.micros() / 2, "learned 0.25, bounded below by min_hold_factor 0.5");
    let (token, estimate) = submit(&mut b, &none, t0 + 10_001);
    assert_eq!(b.job(&token).unwrap().unwrap().hold_placed, estimate, "no samples without a domain yet");
}

/// A priced job keeps the account it was priced for: an update that moves it to another
/// account is refused (its hold would sit on one account and be settled on the other).
#[test]
fn a_priced_job_cannot_move_to_another_account() {
    let t0 = 1_800_000_000;
    let mut b = Budget::with_ledger(config(false), Ledger::in_memory().unwrap());
    for name in ["chem", "phys"] {
        b.create_account(name, Money::from_dollars(100).unwrap(), t0 - 86_400, FOREVER, Money::ZERO, "sim", t0)
            .unwrap();
    }
    let req = request("chem", &SimJob { submit: t0, cpus: 1, limit_min: 60, used_pct: 100 });
    let token = match b.check_and_hold(&req, t0).unwrap() {
        Decision::Accept { token, .. } => token,
        d => panic!("{d:?}"),
    };
    let moved = JobRequest { account: "phys".into(), ..req.clone() };
    assert_eq!(
        b.modify(&token, &moved, false, false, t0 + 1).unwrap(),
        asbb::core::decisions::Modified::Refused {
            reason: "asbb: this job's funds are held on account 'chem'; to run it under 'phys', cancel it and submit it again with -A phys".into()
        }
    );
    assert_eq!(b.balance("phys", t0 + 1).unwrap().held, Money::ZERO);
    assert_eq!(b.balance("chem", t0 + 1).unwrap().held, b.job(&token).unwrap().unwrap().held);
}
