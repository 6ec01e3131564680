// SPDX-License-Identifier: GPL-2.0-or-later
//! Bounded fuzzing (proptest) of everything that reads untrusted text or numbers:
//! `SubmitFields::to_request` (what sbatch sends, SLURM's sentinels included),
//! `parse_alloc_tres` / `CompletionFields::to_completion` (what a finished job
//! record holds), and `Config::parse` (asbb.toml, arbitrary and near-valid). None may
//! panic or overflow; every refusal is an `Err` with a message; and `cost::estimate`
//! / `cost::task_cost` on anything accepted never panic and agree with an
//! independent 128-bit computation (so a silent wrap in a release build is caught).
//!
//! `PROPTEST_CASES` sets the number of cases per property (default 4,096 in release
//! builds, as `make test` runs them, and 512 in debug builds).

use asbb::adapter::fields::{
    parse_alloc_tres, CompletionFields, ReadRequest, SubmitFields, INFINITE, INFINITE16, INFINITE64, MEM_PER_CPU,
    NO_VAL, NO_VAL16, NO_VAL64,
};
use asbb::core::config::{Config, Pricing};
use asbb::core::pricing::cost::{self, CostError};
use asbb::core::pricing::job::{
    EndState, JobRequest, Resources, MAX_ARRAY_TASKS, MAX_CPUS, MAX_NODES, MAX_TIME_LIMIT_MIN,
};
use proptest::prelude::*;

fn config() -> Config {
    Config::parse(
        r#"
[policy]
minimum_charge = "0.01"
exempt_accounts = ["free"]
exempt_partitions = ["scavenge"]
[partitions.debug.rates]
cpu = 0.02
mem_gb = 0.005
node = 0.1
"gres/gpu" = 1.0
"gres/gpu:a100" = 3.0
[partitions.gpu]
default_time_limit_min = 30
[partitions.gpu.rates]
"gres/gpu:h100" = 9999999.999999
[partitions.batch.billing]
unit_hour = 0.01
weights = "CPU=1.0,Mem=0.25G,GRES/gpu=2.0"
[partitions.aws.aws]
instance_type = "c5.large"
node_hour = 0.085
[qos_multipliers]
high = 1.5
"#,
        "fuzz.toml",
    )
    .unwrap()
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(if cfg!(debug_assertions) {
        512
    } else {
        4096
    })
}

/// SLURM's sentinels, edges and ordinary values for a 32-bit field.
fn n32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1u32),
        Just(NO_VAL),
        Just(INFINITE),
        Just(NO_VAL - 1),
        Just(u32::MAX / 2),
        Just(MAX_NODES),
        Just(MAX_NODES + 1),
        Just(MAX_CPUS),
        Just(MAX_CPUS + 1),
        Just(MAX_TIME_LIMIT_MIN),
        Just(MAX_TIME_LIMIT_MIN + 1),
        1u32..5000,
        any::<u32>(),
    ]
}

fn n16() -> impl Strategy<Value = u16> {
    prop_oneof![Just(0u16), Just(1u16), Just(NO_VAL16), Just(INFINITE16), 1u16..256, any::<u16>()]
}

fn n64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(NO_VAL64),
        Just(INFINITE64),
        Just(MEM_PER_CPU),
        Just(MEM_PER_CPU | 1),
        Just(MEM_PER_CPU | (u64::MAX >> 1)),
        Just(u64::MAX >> 1),
        1u64..1_000_000,
        (1u64..100_000).prop_map(|m| m | MEM_PER_CPU),
        any::<u64>(),
    ]
}

/// GRES/TRES-like text: mostly near-valid, sometimes anything.
fn gres_text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        "(gres[:/=])?(gpu|shard|mps|gpu:a100|gpu:h100|gpu:a100:[0-9]{1,12}|gpu:[0-9kKmM]{1,12})(=[0-9kKmM]{0,12})?(\\(S:[0-9-]{1,5}\\))?(,gres/gpu(:[a-z0-9]{1,5})?=[0-9]{1,11}){0,3}"
            .prop_map(Some),
        "[a-z0-9:=,/()%kKmM -]{0,40}".prop_map(Some),
        ".{0,60}".prop_map(Some),
    ]
}

fn array_text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        "[0-9]{1,10}(-[0-9]{1,10})?(:[0-9]{1,10})?(,[0-9]{1,10}(-[0-9]{1,10})?){0,4}(%[0-9]{0,10})?".prop_map(Some),
        "[0-9,:%-]{0,30}".prop_map(Some),
        ".{0,30}".prop_map(Some),
    ]
}

fn name_text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        prop::sample::select(vec![
            "debug",
            "gpu",
            "batch",
            "aws",
            "scavenge",
            "nope",
            "debug,gpu",
            " ",
            "",
            "chem",
            "free"
        ])
        .prop_map(|s| Some(s.to_string())),
        ".{0,40}".prop_map(Some),
    ]
}

prop_compose! {
    fn submit_fields()(
        uid in prop_oneof![Just(0u32), Just(1000u32), any::<u32>()],
        account in name_text(),
        partition in name_text(),
        times in (n32(), n32(), n32()),
        sizes in (n32(), n32(), n32(), n16(), n16(), n32()),
        pn_min_memory in n64(),
        tres in (gres_text(), gres_text(), gres_text()),
        array_inx in array_text(),
        qos in prop_oneof![Just(None), Just(Some("high".to_string())), ".{0,10}".prop_map(Some)],
        job_id in n32(),
        name in prop_oneof![Just(None), ".{0,300}".prop_map(Some)],
    ) -> SubmitFields {
        let (partition_default_time, partition_max_time, time_limit) = times;
        let (min_nodes, max_nodes, num_tasks, ntasks_per_node, cpus_per_task, min_cpus) = sizes;
        let (tres_per_node, tres_per_job, tres_per_task) = tres;
        SubmitFields {
            uid, user_name: Some("u".into()), account, partition, partition_default_time, partition_max_time,
            time_limit, min_nodes, max_nodes, num_tasks, ntasks_per_node, cpus_per_task, min_cpus, pn_min_memory,
            tres_per_node, tres_per_job, tres_per_task, array_inx, qos, job_id, name,
            ..Default::default()
        }
    }
}

/// The estimate recomputed independently, in i128 without any bound: `None` when it
/// cannot fit a micro-dollar i64 (then the core must say Overflow), or when the
/// partition is not priced per TRES (checked only for no panic).
fn oracle_estimate(cfg: &Config, req: &JobRequest) -> Option<Option<i128>> {
    let p = cfg.partitions.get(&req.partition)?;
    let Pricing::Tres(r) = &p.pricing else {
        return None;
    };
    let res = &req.resources;
    let mut per_hour_x1024 = res.cpus as i128 * r.cpu.micros() as i128 * 1024
        + res.mem_mb as i128 * r.mem_gb.micros() as i128
        + res.nodes as i128 * r.node.micros() as i128 * 1024;
    for (typ, &n) in &res.gpus {
        let rate = if typ.is_empty() { r.gpu } else { r.gpu_typed.get(typ).copied().or(r.gpu) };
        per_hour_x1024 += n as i128 * rate?.micros() as i128 * 1024;
    }
    let secs = req.time_limit_min as i128 * 60;
    let d = 3600 * 1024;
    let mut task = (per_hour_x1024 * secs + d / 2) / d;
    if let Some(m) = req.qos.as_deref().and_then(|q| cfg.qos_multipliers.get(q)) {
        task = (task * *m as i128 + 500_000) / 1_000_000;
    }
    if task > i64::MAX as i128 {
        return Some(None);
    }
    let task = task.max(cfg.policy.minimum_charge.micros() as i128);
    let total = task * req.array_tasks.max(1) as i128;
    Some((total <= i64::MAX as i128).then_some(total))
}

/// One task's cost recomputed with checked 128-bit arithmetic (TRES pricing only):
/// `Some(None)` when it cannot be represented, `None` when not checked here.
fn oracle_task_cost(cfg: &Config, partition: &str, res: &Resources, secs: u64) -> Option<Option<i128>> {
    let p = cfg.partitions.get(partition)?;
    let Pricing::Tres(r) = &p.pricing else {
        return None;
    };
    let term = |n: i128, rate: i64, scale: i128| n.checked_mul(rate as i128)?.checked_mul(scale);
    let mut per_hour_x1024 = Some(0i128);
    for t in [
        term(res.cpus as i128, r.cpu.micros(), 1024),
        term(res.mem_mb as i128, r.mem_gb.micros(), 1),
        term(res.nodes as i128, r.node.micros(), 1024),
    ] {
        per_hour_x1024 = per_hour_x1024.zip(t).and_then(|(a, b)| a.checked_add(b));
    }
    for (typ, &n) in &res.gpus {
        let rate = if typ.is_empty() { r.gpu } else { r.gpu_typed.get(typ).copied().or(r.gpu) };
        let t = term(n as i128, rate?.micros(), 1024);
        per_hour_x1024 = per_hour_x1024.zip(t).and_then(|(a, b)| a.checked_add(b));
    }
    let d = 3600 * 1024;
    let total = per_hour_x1024.and_then(|x| x.checked_mul(secs as i128)).map(|x| (x + d / 2) / d);
    Some(total.filter(|&t| t <= i64::MAX as i128).map(|t| t.max(cfg.policy.minimum_charge.micros() as i128)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn submit_fields_never_panic_and_refusals_say_why(f in submit_fields()) {
        let cfg = config();
        match f.to_request(&cfg) {
            Ok(ReadRequest::Priced(req)) => {
                prop_assert!(req.resources.validate().is_ok());
                prop_assert!(req.time_limit_min >= 1 && req.time_limit_min <= MAX_TIME_LIMIT_MIN);
                prop_assert!(req.array_tasks >= 1 && req.array_tasks <= MAX_ARRAY_TASKS);
                prop_assert!(req.job_name.as_ref().map_or(true, |n| n.chars().count() <= 257));
                let est = cost::estimate(&cfg, &req);
                match (oracle_estimate(&cfg, &req), &est) {
                    (Some(Some(expected)), Ok(m)) => prop_assert_eq!(m.micros() as i128, expected),
                    (Some(None), Err(CostError::Overflow)) => {}
                    (Some(expected), got) => prop_assert!(false, "estimate {:?}, oracle {:?} for {:?}", got, expected, req),
                    (None, _) => {}
                }
                if let Ok(m) = est {
                    prop_assert!(!m.is_negative());
                }
            }
            Ok(ReadRequest::Exempt(why)) => prop_assert!(!why.is_empty()),
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.starts_with("asbb: ") && msg.len() > 10, "{}", msg);
                prop_assert!(!msg.contains('\n'), "one line: {}", msg);
            }
        }
    }

    #[test]
    fn alloc_tres_never_panics(text in prop_oneof![
        "((cpu|mem|node|billing|energy|gres/gpu|gres/gpu:[a-z0-9]{1,6}|license/x)=[0-9]{1,22}[KMGTP]?,){0,6}",
        "[a-z0-9=,/:KMGT]{0,50}",
        ".{0,80}",
    ]) {
        match parse_alloc_tres(&text) {
            Ok(res) => prop_assert!(res.validate().is_ok()),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn completions_never_panic_and_price_safely(
        tres in prop_oneof![Just(None), "(cpu=[0-9]{1,9},)?(mem=[0-9]{1,12}[MG]?,)?(node=[0-9]{1,6},)?(gres/gpu(:a100|:h100)?=[0-9]{1,7})?".prop_map(Some), ".{0,40}".prop_map(Some)],
        times in (any::<i64>(), any::<i64>(), any::<i64>(), prop_oneof![Just(0i64), 1i64..2_000_000_000, Just(i64::MAX), Just(i64::MIN)]),
        counts in (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>(), n32()),
        comment in prop_oneof![Just(None), ".{0,40}".prop_map(Some), "x asbb:hold=[a-f0-9.-]{0,20} y".prop_map(Some)],
        state in prop::option::of(prop::sample::select(vec![EndState::Completed, EndState::Requeued, EndState::NodeFail, EndState::Cancelled])),
        partition in name_text(),
    ) {
        let (submit_time, start_time, end_delta, near) = times;
        let (total_cpus, node_cnt, task_count, restart_cnt, job_id) = counts;
        // Some ends are realistic (start + a little), some arbitrary.
        let end_time = if end_delta % 2 == 0 { start_time.saturating_add(near) } else { end_delta };
        let f = CompletionFields {
            cluster: "c".into(), job_id, uid: 1000, user_name: None, account: Some("chem".into()), partition,
            state, start_time, end_time, admin_comment: comment, tres_alloc: tres, total_cpus, node_cnt, task_count,
            submit_time, restart_cnt, qos: None,
        };
        let cfg = config();
        match f.to_completion() {
            Ok(c) => {
                prop_assert!(c.elapsed_s() >= 0);
                prop_assert!(c.task_count >= 1);
                prop_assert!(!c.run_key().is_empty());
                if let (Some(res), Some(p)) = (&c.allocated, cfg.partitions.get(&c.partition)) {
                    let secs = c.elapsed_s() as u64;
                    let r = cost::task_cost(&cfg, p, None, res, secs);
                    match (oracle_task_cost(&cfg, &c.partition, res, secs), &r) {
                        (Some(Some(expected)), Ok(m)) => prop_assert_eq!(m.micros() as i128, expected),
                        (Some(None), Err(CostError::Overflow)) => {}
                        (Some(expected), got) => prop_assert!(false, "cost {:?}, oracle {:?} for {:?} × {} s", got, expected, res, secs),
                        (None, _) => {}
                    }
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

/// Near-valid asbb.toml: the right shape with wrong, extreme or odd values.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("1e308".to_string()),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("-0.0".to_string()),
        Just("9223372036854775807".to_string()),
        Just("\"9223372036854.775807\"".to_string()),
        Just("\"0.0000001\"".to_string()),
        Just("\"1,250.50\"".to_string()),
        Just("\"abc\"".to_string()),
        Just("true".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("4294967296".to_string()),
        (0u32..100_000).prop_map(|n| n.to_string()),
        (0.0f64..1e6).prop_map(|x| format!("{x}")),
        "\"[ -~]{0,12}\"",
    ]
}

fn toml_line() -> impl Strategy<Value = String> {
    let keys = vec![
        "ledger",
        "currency",
        "on_ledger_error",
        "ledger_busy_timeout_ms",
        "unknown_account",
        "minimum_charge",
        "exempt_accounts",
        "approval_threshold",
        "low_balance_hold_days",
        "cpu",
        "mem_gb",
        "node",
        "\"gres/gpu\"",
        "\"gres/gpu:a100\"",
        "\"gres/gpu:\"",
        "unit_hour",
        "weights",
        "instance_type",
        "market",
        "node_hour",
        "default_time_limit_min",
        "high",
        "overspend_ratio",
        "window_days",
        "bogus",
    ];
    let tables = vec![
        "[policy]",
        "[partitions.debug.rates]",
        "[partitions.p.billing]",
        "[partitions.a.aws]",
        "[partitions.g]",
        "[qos_multipliers]",
        "[forecast]",
        "[partitions]",
        "[[policy]]",
        "[",
    ];
    prop_oneof![
        3 => (prop::sample::select(keys), toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => prop::sample::select(tables).prop_map(str::to_string),
        1 => "weights = \"[A-Za-z/:=.,0-9GMT]{0,30}\"",
        1 => ".{0,30}",
    ]
}

const GOOD: &str = "[policy]\nminimum_charge = \"0.01\"\n[partitions.debug.rates]\ncpu = 0.02\n";

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn config_parse_never_panics_and_errors_name_the_file(
        lines in prop::collection::vec(toml_line(), 0..14),
        prefix_good in any::<bool>(),
        raw in ".{0,200}",
        use_raw in prop::bool::weighted(0.15),
        req in (prop_oneof![1u32..64, Just(MAX_CPUS)], prop_oneof![0u64..1_000_000, Just(1u64 << 40)], prop_oneof![0u32..8, Just(1_000_000u32)], prop_oneof![1u32..100_000, Just(MAX_TIME_LIMIT_MIN)], prop_oneof![1u32..1000, Just(MAX_ARRAY_TASKS)]),
    ) {
        let text = if use_raw { raw } else {
            format!("{}{}\n", if prefix_good { GOOD } else { "" }, lines.join("\n"))
        };
        match Config::parse(&text, "fuzz.toml") {
            Ok(cfg) => {
                // Whatever was accepted prices any request without panicking.
                let (cpus, mem_mb, gpus, minutes, tasks) = req;
                for (name, p) in &cfg.partitions {
                    let r = JobRequest {
                        user: "u".into(), uid: 1, account: "a".into(), partition: name.clone(),
                        resources: Resources { nodes: 1, cpus, mem_mb, gpus: [("a100".to_string(), gpus)].into_iter().filter(|g| g.1 > 0).collect() },
                        time_limit_min: minutes, array_tasks: tasks, qos: Some("high".into()), job_id: None, job_name: None,
                    };
                    if let Ok(m) = cost::estimate(&cfg, &r) {
                        prop_assert!(!m.is_negative(), "{name}: {m:?}");
                    }
                    let _ = cost::task_cost(&cfg, p, None, &r.resources, u32::MAX as u64);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.starts_with("fuzz.toml: ") && msg.len() > "fuzz.toml: ".len(), "{}", msg);
            }
        }
    }
}

#[test]
fn a_run_too_long_to_price_is_an_overflow_error_not_a_panic() {
    // Found by `completions_never_panic_and_price_safely`: a billing price times an
    // absurd elapsed time overflowed i128 (a panic in debug builds, a silently
    // wrapped charge in release builds).
    let cfg = config();
    let res = Resources { nodes: 1, cpus: u32::MAX, mem_mb: 0, gpus: Default::default() };
    let p = &cfg.partitions["batch"];
    assert_eq!(cost::task_cost(&cfg, p, None, &res, 1_563_294_669_371_290_033), Err(CostError::Overflow));
    let p = &cfg.partitions["gpu"];
    let res = Resources { gpus: [("h100".to_string(), 1_000_000)].into(), ..res };
    assert_eq!(cost::task_cost(&cfg, p, None, &res, u64::MAX / 2), Err(CostError::Overflow));
}
