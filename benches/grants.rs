// SPDX-License-Identifier: GPL-2.0-or-later
//! `cargo bench --bench grants`: how long `asbb-admin grant report` takes on a
//! file-backed ledger with 1,000,000 journal entries over 5 years, every job charged to
//! the account one grant funds (the worst case: the report reads all of them). Prints
//! one `name=value` per figure.
//!
//! Sizes can be lowered for a quick run: `ASBB_BENCH_ENTRIES`, `ASBB_BENCH_ITERATIONS`;
//! `ASBB_BENCH_DB=/path` keeps the seeded ledger (and reuses it next time).

use asbb::core::config::Config;
use asbb::core::decisions::{parse_date, Budget, DAY_S};
use asbb::core::grants::report::ReportRange;
use asbb::core::ledger::{Ledger, OpenMode};
use asbb::render::{render, ReportFormat};
use std::time::Instant;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const YEARS: i64 = 5;

/// CPU seconds this process has used (user + system), from /proc: on a shared, busy
/// machine it says more than wall time. Clock ticks are 100 a second on Linux.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|x| x.parse().ok()).collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

/// The report's journal read alone (the same SQL, rows only summed): the floor.
fn query_only(budget: &Budget) -> i64 {
    let mut stmt = budget
        .ledger
        .connection()
        .prepare(
            "SELECT j.kind, j.amount_micros, j.at, j.allocation_id, j.account_id,
                    coalesce(r.partition, jb.partition), coalesce(r.user_name, jb.user_name),
                    r.alloc_json, jb.nodes || '/' || jb.cpus || '/' || jb.mem_mb || '/' || coalesce(jb.gpus, '')
             FROM journal j
             LEFT JOIN runs r ON j.kind = 'charge' AND r.run_key = substr(j.txn_key, 8)
             LEFT JOIN jobs jb ON j.kind <> 'charge' AND jb.token = j.token
             WHERE j.allocation_id IN (SELECT id FROM allocations WHERE grant_id = 1)
               AND j.kind IN ('charge', 'refund', 'adjustment')",
        )
        .expect("prepare");
    let mut rows = stmt.query([]).expect("query");
    let mut sum = 0i64;
    while let Some(r) = rows.next().expect("row") {
        sum += r.get::<_, i64>(1).expect("amount");
    }
    sum
}

fn main() {
    let entries = env_or("ASBB_BENCH_ENTRIES", 1_000_000);
    let iterations = env_or("ASBB_BENCH_ITERATIONS", 5).max(1);
    let dir = tempfile::tempdir().expect("temp dir");
    // ASBB_BENCH_DB keeps the seeded ledger there (and reuses it when it exists).
    let path = std::env::var_os("ASBB_BENCH_DB").map(std::path::PathBuf::from).unwrap_or(dir.path().join("bench.db"));
    let config_text = format!(
        "ledger = \"{}\"
[partitions.debug.rates]
cpu = 0.02
mem_gb = 0.005
\"gres/gpu\" = 1.0
\"gres/gpu:a100\" = 3.0
[partitions.batch.billing]
unit_hour = 0.01
weights = \"CPU=1.0,Mem=0.25G,GRES/gpu=2.0\"
[partitions.aws-burst.aws]
instance_type = \"c5.4xlarge\"
node_hour = 0.272
",
        path.display()
    );
    let config = Config::parse(&config_text, "bench.toml").expect("config");
    let start = parse_date("2021-07-01").expect("date");

    let t0 = Instant::now();
    if !path.exists() {
        let ledger = Ledger::open(&path, OpenMode::CreateIfMissing, 5000).expect("ledger");
        seed(ledger.connection(), entries, start);
    }
    let seed_s = t0.elapsed().as_secs_f64();
    let mut budget = Budget::open(config, OpenMode::MustExist).expect("open");
    let now = start + YEARS * 365 * DAY_S;
    let grant_entries: i64 = budget
        .ledger
        .connection()
        .query_row(
            "SELECT count(*) FROM journal WHERE allocation_id IN (SELECT id FROM allocations WHERE grant_id = 1)",
            [],
            |r| r.get(0),
        )
        .expect("count");
    let total_entries: i64 =
        budget.ledger.connection().query_row("SELECT count(*) FROM journal", [], |r| r.get(0)).expect("count");

    let mut text_s = Vec::new();
    let mut text_cpu_s = Vec::new();
    let mut query_s = Vec::new();
    let mut html_s = Vec::new();
    let mut text_len = 0;
    for _ in 0..iterations {
        let t = Instant::now();
        std::hint::black_box(query_only(&budget));
        query_s.push(t.elapsed().as_secs_f64());
        let (t, c) = (Instant::now(), cpu_s());
        let report = budget.grant_report("BENCH-1", ReportRange::Whole, None, now).expect("report");
        text_len = render(&report, ReportFormat::AgencyRequired).len();
        text_s.push(t.elapsed().as_secs_f64());
        text_cpu_s.push(cpu_s() - c);
        let t = Instant::now();
        let report = budget.grant_report("BENCH-1", ReportRange::Whole, None, now).expect("report");
        let _ = render(&report, ReportFormat::Html);
        html_s.push(t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    let _ = budget.grant_report("BENCH-1", ReportRange::Period(3), None, now).expect("report");
    let period_s = t.elapsed().as_secs_f64();
    for v in [&mut text_s, &mut text_cpu_s, &mut query_s, &mut html_s] {
        v.sort_by(f64::total_cmp);
    }
    println!("ledger_journal_entries={total_entries}");
    println!("grant_journal_entries={grant_entries}");
    println!("seed_s={seed_s:.1}");
    println!("iterations={iterations}");
    println!("grant_report_s={:.3}", text_s[text_s.len() / 2]);
    println!("grant_report_min_s={:.3}", text_s[0]);
    println!("grant_report_max_s={:.3}", text_s[text_s.len() - 1]);
    println!("grant_report_cpu_s={:.2}", text_cpu_s[text_cpu_s.len() / 2]);
    println!("grant_query_only_s={:.3}", query_s[query_s.len() / 2]);
    println!("grant_report_html_s={:.3}", html_s[html_s.len() / 2]);
    println!("grant_report_period_s={period_s:.3}");
    println!("grant_report_bytes={text_len}");
    let t = Instant::now();
    let verify = budget.verify().expect("verify");
    println!("verify_s={:.2}", t.elapsed().as_secs_f64());
    println!("verify_clean={}", verify.is_clean());
    if !verify.is_clean() {
        for p in verify.problems.iter().take(5) {
            eprintln!("verify: {p}");
        }
    }
}

/// One grant (5 yearly periods) funding `lab`, and jobs over 5 years, each a hold, a
/// charge to the period's allocation and a release; 1 in 100 also gets a refund. Bulk
/// SQL, cached totals kept consistent so `verify` stays clean.
fn seed(conn: &rusqlite::Connection, entries: u64, start: i64) {
    let year = 365 * DAY_S;
    // 3 entries per job plus 1 per 100 jobs (refunds); 5 deposits.
    let jobs = (entries.saturating_sub(5) * 100 / 301).max(1);
    let step = (YEARS * year) / jobs as i64;
    let sql = format!(
        "BEGIN;
         INSERT INTO accounts (id, name, created_at) VALUES (1, 'lab', {start});
         INSERT INTO grant_accounts (id, grant_number, funding_agency, principal_investigator, grant_start_date,
             grant_end_date, total_award_micros, indirect_rate_ppm, budget_account_id, created_at)
           VALUES (1, 'BENCH-1', 'NSF', 'Bench PI', {start}, {start} + {YEARS} * {year}, 50000000000000, 300000, 1, {start});
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {YEARS})
         INSERT INTO allocations (id, account_id, amount_micros, valid_from, valid_until, memo, created_at, grant_id)
           SELECT i + 1, 1, 7692307692307, {start} + i * {year}, {start} + (i + 1) * {year}, 'grant BENCH-1 period ' || (i + 1),
                  {start}, 1 FROM n;
         INSERT INTO grant_periods (grant_id, period_no, start_date, end_date, amount_micros, allocation_id)
           SELECT 1, id, valid_from, valid_until, 10000000000000, id FROM allocations;
         INSERT INTO journal (txn_key, kind, account_id, allocation_id, amount_micros, at)
           SELECT 'grant:BENCH-1:p' || id, 'deposit', 1, id, amount_micros, {start} FROM allocations;
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {jobs})
         INSERT INTO jobs (token, account_id, user_name, uid, partition, job_id, nodes, cpus, mem_mb, time_limit_min,
                           estimate_micros, tasks_total, tasks_done, held_micros, hold_placed_micros, charged_micros, state,
                           submitted_at, settled_at)
           SELECT printf('b%08x', i), 1, 'user' || (i % 97), 1000 + i % 97,
                  CASE i % 3 WHEN 0 THEN 'debug' WHEN 1 THEN 'batch' ELSE 'aws-burst' END,
                  i + 1, 1 + i % 4, 4 * (1 + i % 8), 4096 * (1 + i % 5), 60,
                  2000000, 1, 1, 0, 2000000, 1000000 + (i % 7) * 1000, 'settled',
                  {start} + i * {step}, {start} + i * {step} + 3600 FROM n;
         INSERT INTO runs (run_key, token, account_id, cluster, job_id, user_name, partition, end_state, start_time,
                           end_time, elapsed_s, alloc_json, cost_micros, estimate_share_micros, reconciled_at)
           SELECT 'seed:' || job_id || ':0', token, 1, 'seed', job_id, user_name, partition, 'COMPLETED',
                  submitted_at + 60, settled_at, settled_at - submitted_at - 60,
                  printf('{{\"nodes\":%d,\"cpus\":%d,\"mem_mb\":%d,\"gpus\":{{%s}}}}', 1 + job_id % 4, 4 * (1 + job_id % 8),
                         4096 * (1 + job_id % 5), CASE WHEN job_id % 11 = 0 THEN '\"a100\":2' ELSE '' END),
                  charged_micros, estimate_micros, settled_at FROM jobs;
         INSERT INTO journal (txn_key, kind, account_id, amount_micros, token, job_id, at)
           SELECT 'hold:' || token, 'hold', 1, estimate_micros, token, job_id, submitted_at FROM jobs;
         INSERT INTO journal (txn_key, kind, account_id, allocation_id, amount_micros, token, job_id, at)
           SELECT 'charge:seed:' || job_id || ':0', 'charge', 1, 1 + (settled_at - {start}) / {year}, charged_micros,
                  token, job_id, settled_at FROM jobs;
         INSERT INTO journal (txn_key, kind, account_id, amount_micros, token, job_id, at)
           SELECT 'release:seed:' || job_id || ':0', 'release', 1, estimate_micros, token, job_id, settled_at FROM jobs;
         INSERT INTO journal (txn_key, kind, account_id, allocation_id, amount_micros, token, job_id, at, memo)
           SELECT 'refund:seed-' || job_id, 'refund', 1, 1 + (settled_at - {start}) / {year}, 500000, token, job_id,
                  settled_at + 86400, 'bench refund' FROM jobs WHERE job_id % 100 = 0;
         UPDATE jobs SET charged_micros = charged_micros - 500000 WHERE job_id % 100 = 0;
         UPDATE allocations SET debited_micros = (
           SELECT coalesce(sum(CASE kind WHEN 'refund' THEN -amount_micros ELSE amount_micros END), 0)
           FROM journal WHERE allocation_id = allocations.id AND kind IN ('charge', 'refund', 'adjustment'));
         INSERT OR IGNORE INTO account_job_users (uid, account_id) SELECT DISTINCT uid, account_id FROM jobs;
         COMMIT;
         PRAGMA wal_checkpoint(TRUNCATE);"
    );
    conn.execute_batch(&sql).expect("seed");
}
