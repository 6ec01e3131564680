// SPDX-License-Identifier: GPL-2.0-or-later
//! `cargo bench --bench ledger`: latency of the plugin's two ledger paths
//! (check_and_hold at submit, reconcile at completion) on a file-backed ledger with
//! 10,000 accounts and 1,000,000 journal entries. Prints one `name=value` per figure.
//!
//! Sizes can be lowered for a quick run: `ASBB_BENCH_ACCOUNTS`, `ASBB_BENCH_ENTRIES`,
//! `ASBB_BENCH_ITERATIONS`. `ASBB_BENCH_GAP_US` pauses before each submission.
//!
//! `contended_*` figures: two writers on the ledger at once (two clusters sharing it,
//! or job_submit beside jobcomp), each with its own connection, submitting and
//! completing jobs `ASBB_BENCH_CONTENDED_GAP_US` apart; `contended_sqlite_*` the same
//! with SQLite's own busy handler instead of asbb's (`asbb_wal_writes::busy`).
//!
//! `floor_*` figures are the reference a check is compared with: the smallest write
//! transaction a synchronous hold could be (read an account's total, append a row,
//! update the total: 2 WAL pages), on a file of its own with the same PRAGMAs.

use asbb::core::config::Config;
use asbb::core::decisions::{Budget, BudgetError, Decision};
use asbb::core::ledger::{Ledger, OpenMode};
use asbb::core::pricing::job::{EndState, JobCompletion, JobRequest, Resources};
use std::collections::BTreeMap;
use std::time::Instant;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted_us: &[f64], p: f64) -> f64 {
    let idx = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    sorted_us[idx]
}

/// Prints `<name>_p50_us` and `<name>_p99_us` of per-call times (sorted here).
fn print_latency(name: &str, times_us: &mut [f64]) {
    times_us.sort_by(f64::total_cmp);
    println!("{name}_p50_us={:.1}", percentile(times_us, 0.50));
    println!("{name}_p99_us={:.1}", percentile(times_us, 0.99));
}

fn main() {
    let accounts = env_or("ASBB_BENCH_ACCOUNTS", 10_000);
    let entries = env_or("ASBB_BENCH_ENTRIES", 1_000_000);
    let iterations = env_or("ASBB_BENCH_ITERATIONS", 20_000);
    // A pause before each submission, as between slurmctld's RPCs (0 = back to back).
    let gap_us = env_or("ASBB_BENCH_GAP_US", 0);
    let paced_iterations = env_or("ASBB_BENCH_PACED_ITERATIONS", 5_000);
    let paced_gap_us = env_or("ASBB_BENCH_PACED_GAP_US", 500);
    // Paced calls again, with this much memory walked before each: slurmctld's own
    // work between two submissions pushes the ledger's code and pages out of the CPU
    // caches, and this phase is what job_submit's time inside slurmctld tracks.
    let cold_iterations = env_or("ASBB_BENCH_COLD_ITERATIONS", 2_000);
    let evict_mib = env_or("ASBB_BENCH_EVICT_MIB", 16) as usize;
    // One account's submissions back to back (a user's sbatch loop): each may decide
    // from what the one before read (`ReadCache`), where the phases above, a completion
    // after every submission, always read the ledger again.
    let burst_iterations = env_or("ASBB_BENCH_BURST_ITERATIONS", 5_000);
    let contended_iterations = env_or("ASBB_BENCH_CONTENDED_ITERATIONS", 3_000);
    let contended_gap_us = env_or("ASBB_BENCH_CONTENDED_GAP_US", 200);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.db");
    let config_text = format!(
        "ledger = \"{}\"\n[policy]\nledger_busy_timeout_ms = 50\n[partitions.debug.rates]\ncpu = 0.02\nmem_gb = 0.005\n",
        path.display()
    );
    let config = Config::parse(&config_text, "bench.toml").expect("config");

    let t0 = Instant::now();
    {
        let ledger = Ledger::open(&path, OpenMode::CreateIfMissing, 5000).expect("ledger");
        seed(ledger.connection(), accounts, entries);
    }
    let seed_s = t0.elapsed().as_secs_f64();
    // As the plugins open it: no automatic checkpoint in the writing connection, a
    // checkpointer thread beside it.
    let ledger = Ledger::open(&path, OpenMode::MustExist, 50).and_then(|l| l.without_autocheckpoint()).expect("open");
    let mut budget = Budget::with_ledger(config, ledger);

    // Pages written per call, from the WAL's growth while nothing checkpoints it: the
    // figure that does not move with the machine's load (each frame is a page plus a
    // 24-byte header).
    let wal_path = std::path::PathBuf::from(format!("{}-wal", path.display()));
    let wal_len = || std::fs::metadata(&wal_path).map(|m| m.len()).unwrap_or(0);
    let page_bytes: u64 = budget_page_size(&path) + 24;
    const PAGE_PROBES: u64 = 200;

    // Probes first (pages per call, nothing checkpointing), then the timed calls with
    // the checkpointer running, as in slurmctld.
    let mut next_job = 0u64;
    let (probe_check, probe_reconcile) =
        run_jobs(&mut budget, accounts, &mut next_job, PAGE_PROBES, 0, 0, Measure::WalBytes(&wal_len));
    println!("wal_pages_per_check={:.1}", probe_check.iter().sum::<f64>() / page_bytes as f64 / PAGE_PROBES as f64);
    println!(
        "wal_pages_per_reconcile={:.1}",
        probe_reconcile.iter().sum::<f64>() / page_bytes as f64 / PAGE_PROBES as f64
    );
    let checkpointer = asbb::core::ledger::Checkpointer::start(&path);
    let (mut check_us, mut reconcile_us) =
        run_jobs(&mut budget, accounts, &mut next_job, iterations, gap_us, 0, Measure::Micros);
    let wal_after = wal_len();
    // Paced as slurmctld paces them: its own work per submission (about 500 us of its
    // CPU, measured) leaves the checkpointer room to copy the WAL and rewind it, so
    // commits overwrite the WAL's pages instead of growing the file.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (mut paced_check_us, mut paced_reconcile_us) =
        run_jobs(&mut budget, accounts, &mut next_job, paced_iterations, paced_gap_us, 0, Measure::Micros);
    let (mut cold_check_us, mut cold_reconcile_us) =
        run_jobs(&mut budget, accounts, &mut next_job, cold_iterations, paced_gap_us, evict_mib, Measure::Micros);
    // Unchanged from wal_mib_after when the checkpointer rewound the WAL meanwhile.
    let wal_after_paced = wal_len();
    let (mut burst_check_us, burst_hits) = run_burst(&mut budget, &mut next_job, burst_iterations, 0);
    let (mut burst_cold_check_us, burst_cold_hits) = run_burst(&mut budget, &mut next_job, cold_iterations, evict_mib);
    let contended = |next_job: &mut u64, sqlite_default: bool| {
        let base = *next_job;
        *next_job += 2 * contended_iterations;
        run_contended(&path, &budget.config, accounts, base, contended_iterations, contended_gap_us, sqlite_default)
    };
    let mut contended_sqlite = contended(&mut next_job, true);
    let mut contended_asbb = contended(&mut next_job, false);
    drop(checkpointer);
    let floor_path = dir.path().join("floor.db");
    let mut floor_check_us = floor(&floor_path, accounts, iterations, 0, 0);
    let mut floor_cold_check_us = floor(&floor_path, accounts, cold_iterations, paced_gap_us, evict_mib);
    println!("run_jobs_gave_up_busy={}", GAVE_UP_BUSY.load(std::sync::atomic::Ordering::Relaxed));
    println!("ledger_accounts={accounts}");
    println!("ledger_journal_entries={}", entries + 4 * next_job);
    println!("seed_s={seed_s:.1}");
    println!("iterations={iterations}");
    println!("gap_us={gap_us}");
    println!("wal_mib_after={:.1}", wal_after as f64 / (1024.0 * 1024.0));
    print_latency("check", &mut check_us);
    print_latency("reconcile", &mut reconcile_us);
    println!("paced_iterations={paced_iterations}");
    println!("paced_gap_us={paced_gap_us}");
    println!("wal_mib_after_paced={:.1}", wal_after_paced as f64 / (1024.0 * 1024.0));
    print_latency("paced_check", &mut paced_check_us);
    print_latency("paced_reconcile", &mut paced_reconcile_us);
    println!("cold_iterations={cold_iterations}");
    println!("cold_evict_mib={evict_mib}");
    print_latency("cold_check", &mut cold_check_us);
    print_latency("cold_reconcile", &mut cold_reconcile_us);
    println!("burst_iterations={burst_iterations}");
    println!("burst_read_cache_hits={burst_hits}");
    print_latency("burst_check", &mut burst_check_us);
    println!("burst_cold_read_cache_hits={burst_cold_hits}");
    print_latency("burst_cold_check", &mut burst_cold_check_us);
    println!("contended_iterations={contended_iterations}");
    println!("contended_gap_us={contended_gap_us}");
    for (name, c) in [("contended_sqlite", &mut contended_sqlite), ("contended", &mut contended_asbb)] {
        print_latency(&format!("{name}_check"), &mut c.0);
        print_latency(&format!("{name}_reconcile"), &mut c.1);
        println!("{name}_busy_errors={}", c.2);
    }
    print_latency("floor_check", &mut floor_check_us);
    print_latency("floor_cold_check", &mut floor_cold_check_us);
    // The same calls on a PostgreSQL ledger (`ASBB_BENCH_POSTGRES`: an empty database's
    // ledger URL, as asbb.toml names it) and, beside it, on an SQLite ledger of the same
    // rows: `accounts` accounts, each with one deposit.
    if let Ok(url) = std::env::var("ASBB_BENCH_POSTGRES") {
        // The phases above leave a gigabyte or more of WAL for the kernel to write
        // back: on the same disk, PostgreSQL's commits would wait behind it (one passed
        // the 500 ms bound). Written back first, as a real controller's disk would be.
        let _ = std::process::Command::new("sync").status();
        let small = dir.path().join("small.db");
        let sqlite = Ledger::open(&small, OpenMode::CreateIfMissing, 5000).expect("small ledger");
        seed(sqlite.connection(), accounts, 0);
        let t = Instant::now();
        let mut pg =
            Ledger::open(std::path::Path::new(&url), OpenMode::CreateIfMissing, 5000).expect("postgres ledger");
        asbb::core::ledger::copy_rows(&sqlite, &mut pg).expect("copy onto postgres");
        println!("postgres_copy_s={:.1}", t.elapsed().as_secs_f64());
        drop(pg);
        // The bound the README advises for PostgreSQL: a commit waits for its WAL on
        // disk, and at 50 ms one call in a few thousand met a slow fsync and gave up.
        let pg = Ledger::open(std::path::Path::new(&url), OpenMode::MustExist, 500).expect("postgres ledger");
        let sqlite = sqlite.without_autocheckpoint().expect("small ledger");
        let checkpointer = asbb::core::ledger::Checkpointer::start(&small);
        for (name, ledger) in [("small_sqlite", sqlite), ("postgres", pg)] {
            let mut b = Budget::with_ledger(budget.config.clone(), ledger);
            let mut next = 0;
            let (mut check, mut settle) =
                run_jobs(&mut b, accounts, &mut next, paced_iterations, paced_gap_us, 0, Measure::Micros);
            print_latency(&format!("{name}_check"), &mut check);
            print_latency(&format!("{name}_reconcile"), &mut settle);
            // A burst: submissions back to back that nothing completes in between (on
            // PostgreSQL, each decided from the one before's reads and committed in one
            // round trip), over a few accounts; completed afterwards.
            let trips_before = b.ledger_round_trips();
            let mut burst = Vec::with_capacity(paced_iterations as usize);
            let mut done = Vec::with_capacity(paced_iterations as usize);
            for k in 0..paced_iterations {
                let i = next;
                next += 1;
                let req = request(&format!("acct{:05}", k % 10));
                std::thread::sleep(std::time::Duration::from_micros(paced_gap_us));
                let t = Instant::now();
                let decision = b.check_and_hold(&req, 1_800_000_000 + i as i64).expect("check");
                burst.push(t.elapsed().as_secs_f64() * 1e6);
                done.push(completion(i, decision, &req));
            }
            if let (Some(before), Some(after)) = (trips_before, b.ledger_round_trips()) {
                println!("{name}_burst_round_trips_per_check={:.2}", (after - before) as f64 / paced_iterations as f64);
            }
            print_latency(&format!("{name}_burst_check"), &mut burst);
            for (i, c) in done.iter().enumerate() {
                b.reconcile(c, 1_800_000_700 + i as i64).expect("reconcile");
            }
            println!("{name}_verify_clean={}", b.verify().expect("verify").is_clean());
        }
        drop(checkpointer);
    }
    let t = Instant::now();
    let report = budget.verify().expect("verify");
    println!("verify_s={:.2}", t.elapsed().as_secs_f64());
    println!("verify_clean={}", report.is_clean());
    // `asbb-admin transactions ACCOUNT`: an account's whole history, read straight
    // through the journal (only cost entries are indexed by time).
    let t = Instant::now();
    let history = budget.journal_of("acct00000", 0).expect("history");
    println!("account_history_s={:.2}", t.elapsed().as_secs_f64());
    println!("account_history_entries={}", history.len());
    // Chargeback over the whole journal (an admin's report; the bound is 1 s).
    use asbb::core::usage::UsageKey;
    for (name, by) in [("account", vec![UsageKey::Account]), ("account_user", vec![UsageKey::Account, UsageKey::User])]
    {
        let t = Instant::now();
        let r = budget.usage_report(0, 253_402_214_400, &by).expect("usage report");
        println!("usage_report_by_{name}_s={:.2}", t.elapsed().as_secs_f64());
        println!("usage_report_by_{name}_rows={}", r.rows.len());
    }
    // What `asbb-admin alerts run` reads: every account's (and grant's) spending and burn
    // rate, the jobs awaiting approval and the old holds.
    let alerts = Config::parse(
        "[alerts]\nwebhook_url = \"http://127.0.0.1:9/\"\nhold_age_hours = 24\napproval_wait_hours = 1\n",
        "a.toml",
    )
    .expect("alerts config")
    .alerts
    .expect("[alerts]");
    let t = Instant::now();
    let conditions =
        budget.alert_conditions(&alerts, 1_800_000_000 + (PAGE_PROBES + iterations) as i64 + 3_600).expect("alerts");
    println!("alert_conditions_s={:.2}", t.elapsed().as_secs_f64());
    println!("alert_conditions={}", conditions.len());
}

/// What `run_jobs` collects per call.
enum Measure<'a> {
    /// Its time.
    Micros,
    /// How many bytes it added to the WAL (with `wal_len`, the WAL's length).
    WalBytes(&'a dyn Fn() -> u64),
}

impl Measure<'_> {
    /// Runs `call` and gives back its figure.
    fn of<T>(&self, call: impl FnOnce() -> T) -> (T, f64) {
        match self {
            Measure::Micros => {
                let t = Instant::now();
                let out = call();
                (out, t.elapsed().as_secs_f64() * 1e6)
            }
            Measure::WalBytes(wal_len) => {
                let before = wal_len();
                let out = call();
                (out, (wal_len() - before) as f64)
            }
        }
    }
}

/// Submits and completes `n` jobs (one check_and_hold, one reconcile each), `gap_us`
/// apart, and gives each call's figure.
fn run_jobs(
    budget: &mut Budget,
    accounts: u64,
    next_job: &mut u64,
    n: u64,
    gap_us: u64,
    evict_mib: usize,
    measure: Measure<'_>,
) -> (Vec<f64>, Vec<f64>) {
    let mut evict = vec![0u8; evict_mib << 20];
    let mut evict_caches = || {
        for byte in evict.iter_mut().step_by(64) {
            *byte = byte.wrapping_add(1);
        }
        std::hint::black_box(&evict);
    };
    let (mut checks, mut reconciles) = (Vec::with_capacity(n as usize), Vec::with_capacity(n as usize));
    for _ in 0..n {
        let i = *next_job;
        *next_job += 1;
        let account = format!("acct{:05}", (i * 7919) % accounts);
        let req = request(&account);
        if gap_us > 0 {
            std::thread::sleep(std::time::Duration::from_micros(gap_us));
        }
        evict_caches();
        let (decision, figure) = measure.of(|| budget.check_and_hold(&req, 1_800_000_000 + i as i64));
        checks.push(figure);
        let Some(decision) = gave_up_busy(decision, "check") else { continue };
        let done = completion(i, decision, &req);
        evict_caches();
        let (settled, figure) = measure.of(|| budget.reconcile(&done, 1_800_000_700 + i as i64));
        reconciles.push(figure);
        if gave_up_busy(settled, "reconcile").is_none() {
            // As jobcomp's safety net would: settled once the ledger is free.
            while gave_up_busy(budget.reconcile(&done, 1_800_000_700 + i as i64), "reconcile").is_none() {}
        }
    }
    (checks, reconciles)
}

/// Calls of `run_jobs` that gave up busy after the 50 ms bound. Nothing else writes
/// in those phases, so the lock they waited for was the checkpointer's: a RESTART
/// checkpoint that meets frames committed since its PASSIVE pass copies them and
/// syncs the files holding the write lock, and an fsync can pass 50 ms.
static GAVE_UP_BUSY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `result`'s value; a busy ledger is counted in `GAVE_UP_BUSY` (`None`), any other
/// error ends the bench.
fn gave_up_busy<T>(result: Result<T, BudgetError>, what: &str) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(BudgetError::Ledger(e)) if e.is_busy() => {
            GAVE_UP_BUSY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            None
        }
        Err(e) => panic!("{what}: {e}"),
    }
}

/// Two writers at once, each on a connection of its own (as two clusters' plugins):
/// each submits and completes `n` jobs `gap_us` apart, in accounts of its own half.
/// Gives every call's time (checks, reconciles) and how many gave up busy after the
/// plugins' 50 ms bound; with `sqlite_default`, through SQLite's own busy handler.
fn run_contended(
    path: &std::path::Path,
    config: &Config,
    accounts: u64,
    base_job: u64,
    n: u64,
    gap_us: u64,
    sqlite_default: bool,
) -> (Vec<f64>, Vec<f64>, u64) {
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let (path, config) = (path.to_path_buf(), config.clone());
            std::thread::spawn(move || {
                let ledger = Ledger::open(&path, OpenMode::MustExist, 50)
                    .and_then(|l| l.without_autocheckpoint())
                    .expect("open");
                if sqlite_default {
                    ledger.connection().busy_timeout(std::time::Duration::from_millis(50)).expect("busy handler");
                }
                let mut budget = Budget::with_ledger(config, ledger);
                let busy = |e: &BudgetError| matches!(e, BudgetError::Ledger(l) if l.is_busy());
                let (mut checks, mut reconciles, mut gave_up) = (Vec::new(), Vec::new(), 0u64);
                for k in 0..n {
                    let i = base_job + w * n + k;
                    let account = format!("acct{:05}", w * (accounts / 2) + (k * 7919) % (accounts / 2));
                    let req = request(&account);
                    std::thread::sleep(std::time::Duration::from_micros(gap_us));
                    let t = Instant::now();
                    let decision = match budget.check_and_hold(&req, 1_800_000_000 + i as i64) {
                        Err(e) if busy(&e) => {
                            gave_up += 1;
                            continue;
                        }
                        other => other.expect("check"),
                    };
                    checks.push(t.elapsed().as_secs_f64() * 1e6);
                    let done = completion(i, decision, &req);
                    let t = Instant::now();
                    loop {
                        match budget.reconcile(&done, 1_800_000_700 + i as i64) {
                            Err(e) if busy(&e) => gave_up += 1,
                            other => {
                                other.expect("reconcile");
                                break;
                            }
                        }
                    }
                    reconciles.push(t.elapsed().as_secs_f64() * 1e6);
                }
                (checks, reconciles, gave_up)
            })
        })
        .collect();
    let (mut checks, mut reconciles, mut gave_up) = (Vec::new(), Vec::new(), 0);
    for w in writers {
        let (c, r, g) = w.join().expect("writer");
        checks.extend(c);
        reconciles.extend(r);
        gave_up += g;
    }
    (checks, reconciles, gave_up)
}

/// A user's loop of `sbatch`: `n` submissions to one account, back to back with no
/// job ending between them, then their completions. Gives each submission's time and
/// how many decided from what the one before had read.
/// With `evict_mib`, that much memory is walked before each, as in `run_jobs`.
fn run_burst(budget: &mut Budget, next_job: &mut u64, n: u64, evict_mib: usize) -> (Vec<f64>, u64) {
    let hits_before = budget.read_cache_hits();
    let mut checks = Vec::with_capacity(n as usize);
    let mut done = Vec::with_capacity(n as usize);
    let mut evict = vec![0u8; evict_mib << 20];
    for _ in 0..n {
        let i = *next_job;
        *next_job += 1;
        let req = request("acct00001");
        for byte in evict.iter_mut().step_by(64) {
            *byte = byte.wrapping_add(1);
        }
        std::hint::black_box(&evict);
        let t = Instant::now();
        let decision = budget.check_and_hold(&req, 1_800_000_000 + i as i64).expect("check");
        checks.push(t.elapsed().as_secs_f64() * 1e6);
        done.push(completion(i, decision, &req));
    }
    let hits = budget.read_cache_hits() - hits_before;
    for (i, c) in done.iter().enumerate() {
        budget.reconcile(c, 1_800_000_700 + i as i64).expect("reconcile");
    }
    (checks, hits)
}

/// The bench's job: 4 CPUs, 8 GiB, an hour, in `account`.
fn request(account: &str) -> JobRequest {
    JobRequest {
        user: "bench".into(),
        uid: 1000,
        account: account.into(),
        partition: "debug".into(),
        resources: Resources { nodes: 1, cpus: 4, mem_mb: 8192, gpus: BTreeMap::new() },
        time_limit_min: 60,
        array_tasks: 1,
        qos: None,
        job_id: None,
        job_name: None,
    }
}

/// Job `i`'s completion after 10 minutes (it must have been accepted).
fn completion(i: u64, decision: Decision, req: &JobRequest) -> JobCompletion {
    let token = match decision {
        Decision::Accept { token, .. } => token,
        other => panic!("bench job not accepted: {other:?}"),
    };
    JobCompletion {
        cluster: "bench".into(),
        job_id: 1_000_000 + i as u32,
        hold_token: Some(token),
        user: "bench".into(),
        account: req.account.clone(),
        partition: "debug".into(),
        state: EndState::Completed,
        start_time: 1_800_000_000 + i as i64,
        end_time: 1_800_000_000 + i as i64 + 600,
        allocated: Some(req.resources.clone()),
        task_count: 1,
        submit_time: 1_800_000_000 + i as i64,
        run_index: 0,
        qos: None,
    }
}

/// The floor: `n` of the smallest write transactions a synchronous hold could be, on
/// `path` (created with `accounts` totals on first use), `gap_us` apart with
/// `evict_mib` of memory walked before each; each one's time in µs. Checkpointed
/// between calls, as a checkpointer would (not timed).
fn floor(path: &std::path::Path, accounts: u64, n: u64, gap_us: u64, evict_mib: usize) -> Vec<f64> {
    let conn = rusqlite::Connection::open(path).expect("floor db");
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;
         CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY, held_micros INTEGER NOT NULL, name TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS holds (id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL,
                                           amount_micros INTEGER NOT NULL, at INTEGER NOT NULL);
         INSERT OR IGNORE INTO totals (id, held_micros, name)
           WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {accounts})
           SELECT i, 0, printf('acct%05d', i) FROM n;"
    ))
    .expect("floor schema");
    let mut evict = vec![0u8; evict_mib << 20];
    let mut times = Vec::with_capacity(n as usize);
    for i in 0..n as i64 {
        if gap_us > 0 {
            std::thread::sleep(std::time::Duration::from_micros(gap_us));
        }
        for byte in evict.iter_mut().step_by(64) {
            *byte = byte.wrapping_add(1);
        }
        std::hint::black_box(&evict);
        let account = (i * 7919) % accounts as i64;
        let t = Instant::now();
        let run = |sql: &str, params: &[&dyn rusqlite::ToSql]| {
            conn.prepare_cached(sql).and_then(|mut s| s.execute(params)).expect("floor statement");
        };
        run("BEGIN IMMEDIATE", &[]);
        let held: i64 = conn
            .prepare_cached("SELECT held_micros FROM totals WHERE id = ?1")
            .and_then(|mut s| s.query_row([account], |r| r.get(0)))
            .expect("floor read");
        run("INSERT INTO holds (account_id, amount_micros, at) VALUES (?1, ?2, ?3)", &[&account, &1000, &i]);
        run("UPDATE totals SET held_micros = ?2 WHERE id = ?1", &[&account, &(held + 1000)]);
        run("COMMIT", &[]);
        times.push(t.elapsed().as_secs_f64() * 1e6);
        if i % 256 == 255 {
            conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())).expect("floor checkpoint");
        }
    }
    times
}

/// Fills the ledger with accounts and a journal of settled jobs, in bulk SQL, keeping
/// every cached total consistent so `verify` stays clean.
fn seed(conn: &rusqlite::Connection, accounts: u64, entries: u64) {
    // Each seeded job writes 3 entries: hold, charge, release.
    let jobs = entries.saturating_sub(accounts) / 3;
    let sql = format!(
        "BEGIN;
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {accounts})
         INSERT INTO accounts (id, name, created_at) SELECT i + 1, printf('acct%05d', i), 0 FROM n;
         INSERT INTO allocations (id, account_id, amount_micros, valid_from, valid_until, created_at)
           SELECT id, id, 1000000000000, 0, 253402214400, 0 FROM accounts;
         INSERT INTO journal (txn_key, kind, account_id, allocation_id, amount_micros, at)
           SELECT 'seed-deposit:' || id, 'deposit', id, id, 1000000000000, 0 FROM accounts;
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {jobs})
         INSERT INTO jobs (token, account_id, user_name, uid, partition, job_id, nodes, cpus, mem_mb, time_limit_min,
                           estimate_micros, tasks_total, tasks_done, held_micros, hold_placed_micros, charged_micros, state,
                           submitted_at, settled_at)
           SELECT printf('%010x5eed00', i + 1), (i % {accounts}) + 1, 'seed', 1000, 'debug', i + 1, 1, 4, 8192, 60, 100000,
                  1, 1, 0, 100000, 50000, 'settled', i, i + 60 FROM n;
         INSERT INTO runs (run_key, token, account_id, cluster, job_id, user_name, partition, end_state, start_time,
                           end_time, elapsed_s, cost_micros, estimate_share_micros, reconciled_at)
           SELECT 'seed:' || job_id || ':0', token, account_id, 'seed', job_id, 'seed', 'debug', 'COMPLETED', 0, 60, 60,
                  50000, 100000, 60 FROM jobs;
         INSERT INTO journal (txn_key, kind, account_id, amount_micros, token, job_id, at)
           SELECT 'hold:' || token, 'hold', account_id, 100000, token, job_id, submitted_at FROM jobs;
         INSERT INTO journal (txn_key, kind, account_id, allocation_id, amount_micros, token, job_id, at)
           SELECT 'charge:seed:' || job_id || ':0', 'charge', account_id, account_id, 50000, token, job_id, settled_at FROM jobs;
         INSERT INTO journal (txn_key, kind, account_id, amount_micros, token, job_id, at)
           SELECT 'release-run:seed:' || job_id || ':0', 'release', account_id, 100000, token, job_id, settled_at FROM jobs;
         CREATE TEMP TABLE seed_counts AS SELECT account_id, count(*) AS n FROM jobs GROUP BY account_id;
         UPDATE allocations SET debited_micros = 50000 * coalesce((SELECT n FROM seed_counts s WHERE s.account_id = allocations.account_id), 0);
         INSERT OR IGNORE INTO account_job_users (uid, account_id) SELECT DISTINCT uid, account_id FROM jobs;
         COMMIT;
         PRAGMA wal_checkpoint(TRUNCATE);"
    );
    conn.execute_batch(&sql).expect("seed");
}

/// The ledger's page size in bytes.
fn budget_page_size(path: &std::path::Path) -> u64 {
    let conn = rusqlite::Connection::open(path).expect("open for page size");
    conn.query_row("PRAGMA page_size", [], |r| r.get(0)).expect("page size")
}
