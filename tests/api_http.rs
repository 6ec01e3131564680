// SPDX-License-Identifier: GPL-2.0-or-later
//! The integration API against the real server: started in-process on a free
//! loopback port and on a unix socket in a temporary folder, talked to over real
//! sockets. Every endpoint, auth failures, bad bodies, unknown jobs, idempotent replays
//! (with `verify` clean after), the burst launcher's cost files (tests/data/import), the
//! unix socket's user role (through `asbb` run as another uid), and the learning
//! bound as a property.

#![cfg(feature = "api")]

use asbb::api::client::{request, Response, Target};
use asbb::api::{self, RunningServer, ServeOptions};
use asbb::core::config::{ApiRole, Config, LearningConfig};
use asbb::core::decisions::{Budget, Decision, FOREVER};
use asbb::core::grants::{NewGrant, PeriodSplit};
use asbb::core::ledger::OpenMode;
use asbb::core::money::Money;
use asbb::core::pricing::job::{EndState, JobCompletion, JobRequest, Resources};
use asbb::core::pricing::learning::{factor_from_ratios, hold_for_ledger, hold_from_factor, PPM};
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const READ: &str = "read-token-1";
const INTEGRATION: &str = "integration-token-2";
const ADMIN: &str = "admin-token-3";
const DAY: i64 = 86_400;

fn sha(t: &str) -> String {
    Sha256::digest(t.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn config_text(ledger: &Path) -> String {
    format!(
        r#"
ledger = "{}"
[policy]
minimum_charge = "0.01"
[partitions.debug.rates]
cpu = 0.02
mem_gb = 0.005
[partitions.aws.aws]
instance_type = "c5.large"
node_hour = 0.085
[api]
[[api.tokens]]
name = "reader"
sha256 = "{}"
role = "read"
[[api.tokens]]
name = "launcher"
sha256 = "{}"
role = "integration"
[[api.tokens]]
name = "boss"
sha256 = "{}"
role = "admin"
"#,
        ledger.display(),
        sha(READ),
        sha(INTEGRATION),
        sha(ADMIN)
    )
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn req(account: &str, partition: &str, cpus: u32, minutes: u32, job_id: Option<u32>) -> JobRequest {
    JobRequest {
        user: "alice".into(),
        uid: 1234,
        account: account.into(),
        partition: partition.into(),
        resources: Resources { nodes: 1, cpus, mem_mb: 0, gpus: Default::default() },
        time_limit_min: minutes,
        array_tasks: 1,
        qos: None,
        job_id,
        job_name: None,
    }
}

fn completion(r: &JobRequest, token: Option<&str>, cluster: &str, job_id: u32, ran_s: i64, end: i64) -> JobCompletion {
    JobCompletion {
        cluster: cluster.into(),
        job_id,
        hold_token: token.map(str::to_string),
        user: r.user.clone(),
        account: r.account.clone(),
        partition: r.partition.clone(),
        state: EndState::Completed,
        start_time: end - ran_s,
        end_time: end,
        allocated: Some(r.resources.clone()),
        task_count: 1,
        submit_time: end - ran_s - 60,
        run_index: 0,
        qos: None,
    }
}

/// Submits and (optionally) finishes job `job_id`; returns its token.
fn job(b: &mut Budget, account: &str, partition: &str, job_id: u32, cluster: &str, ran_s: Option<i64>) -> String {
    let r = req(account, partition, 4, 120, None);
    let t = now() - 3_600;
    let token = match b.check_and_hold(&r, t).unwrap() {
        Decision::Accept { token, .. } => token,
        d => panic!("{d:?}"),
    };
    if let Some(s) = ran_s {
        b.reconcile(&completion(&r, Some(&token), cluster, job_id, s, t + 1_800), t + 1_800).unwrap();
    }
    token
}

struct World {
    dir: tempfile::TempDir,
    server: Option<RunningServer>,
}

impl World {
    fn ledger(&self) -> PathBuf {
        self.dir.path().join("ledger.db")
    }

    fn config_file(&self) -> PathBuf {
        self.dir.path().join("asbb.toml")
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/api.sock")
    }

    fn config(&self) -> Config {
        Config::load(&self.config_file()).unwrap()
    }

    fn budget(&self) -> Budget {
        Budget::open(self.config(), OpenMode::MustExist).unwrap()
    }

    fn tcp(&self) -> Target<'static> {
        Target::Tcp(self.server.as_ref().unwrap().tcp.unwrap())
    }

    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Response {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        request(&self.tcp(), method, path, &headers, body.map(str::as_bytes), Duration::from_secs(20)).unwrap()
    }

    fn unix(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        let s = self.socket();
        request(&Target::Unix(&s), method, path, &[], body.map(str::as_bytes), Duration::from_secs(20)).unwrap()
    }

    /// Counts of the rows an API write could add.
    fn snapshot(&self) -> String {
        let conn = rusqlite::Connection::open(self.ledger()).unwrap();
        ["journal", "cost_updates", "performance_feedback", "learning_samples", "account_members", "jobs"]
            .iter()
            .map(|t| {
                let n: i64 = conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0)).unwrap();
                format!("{t}={n}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn verify_clean(&self) {
        let report = self.budget().verify().unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
    }

    fn cost_update_rows(&self, source: &str) -> i64 {
        let conn = rusqlite::Connection::open(self.ledger()).unwrap();
        conn.query_row("SELECT count(*) FROM cost_updates WHERE source = ?1", [source], |r| r.get(0)).unwrap()
    }

    fn adjustments(&self, key: &str) -> i64 {
        let conn = rusqlite::Connection::open(self.ledger()).unwrap();
        conn.query_row("SELECT count(*) FROM journal WHERE txn_key = ?1", [key], |r| r.get(0)).unwrap()
    }
}

/// chem ($1000) with jobs 101 (settled on c1), 102 (still running), 103 (ran with no
/// hold), 105 on c1 and on c2 (one id, two jobs); phys ($50) with job 104 (settled); a
/// grant funding chem.
fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.db");
    std::fs::write(dir.path().join("asbb.toml"), config_text(&ledger)).unwrap();
    let config = Config::load(&dir.path().join("asbb.toml")).unwrap();
    let mut b = Budget::open(config.clone(), OpenMode::CreateIfMissing).unwrap();
    let t = now();
    b.create_account("chem", Money::from_dollars(1000).unwrap(), t - 30 * DAY, FOREVER, Money::ZERO, "test", t)
        .unwrap();
    b.create_account("phys", Money::from_dollars(50).unwrap(), t - 30 * DAY, FOREVER, Money::ZERO, "test", t).unwrap();
    job(&mut b, "chem", "debug", 101, "c1", Some(3_600));
    job(&mut b, "chem", "aws", 102, "c1", None);
    // 102's id is known only once it runs; give the ledger a run-less id like SLURM's job_submit does.
    let r = req("chem", "debug", 2, 60, None);
    b.reconcile(&completion(&r, None, "c1", 103, 600, t - 600), t - 600).unwrap();
    job(&mut b, "phys", "debug", 104, "c1", Some(1_800));
    job(&mut b, "chem", "debug", 105, "c1", Some(600));
    job(&mut b, "chem", "debug", 105, "c2", Some(900));
    let start = chrono::DateTime::from_timestamp(t - 30 * DAY, 0).unwrap().format("%Y-%m-%d").to_string();
    let _ = start;
    b.create_grant(
        &NewGrant {
            number: "NSF-1".into(),
            agency: "NSF".into(),
            pi: "Ada".into(),
            pi_email: None,
            co_pis: vec![],
            program: None,
            federal_award_id: None,
            start: t - t.rem_euclid(DAY) - 10 * DAY,
            end: t - t.rem_euclid(DAY) + 365 * DAY,
            award: Money::from_dollars(500).unwrap(),
            indirect_rate_ppm: 0,
            account: Some("chem".into()),
            periods: PeriodSplit::Whole,
        },
        "test",
        t,
    )
    .unwrap();
    drop(b);
    let server = api::start(
        config,
        ServeOptions {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            socket: Some(dir.path().join("run/api.sock")),
            log: false,
            ..Default::default()
        },
    )
    .unwrap();
    World { dir, server: Some(server) }
}

fn error_code(r: &Response) -> String {
    r.json()["error"]["code"].as_str().unwrap_or_default().to_string()
}

/// Sends `raw` on the unix socket as uid 65534 (a plain socket `user`) and returns the
/// server's raw answer. `None` (the caller skips) without root or setpriv, or when uid
/// 65534 cannot run this test binary. Runs this binary's `raw_socket_client` under setpriv.
fn raw_as_nobody(w: &World, raw: &str) -> Option<String> {
    let setpriv = Path::new("/usr/bin/setpriv");
    if asbb::cli::current_uid() != 0 || !setpriv.exists() {
        eprintln!("skipped: needs root and setpriv to connect as another user");
        return None;
    }
    use std::os::unix::fs::PermissionsExt;
    for p in [w.dir.path().to_path_buf(), w.dir.path().join("run")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let hex: String = raw.bytes().map(|b| format!("{b:02x}")).collect();
    let out = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "raw_socket_client", "--nocapture", "--test-threads=1"])
        .env("ASBB_TEST_SOCKET", w.socket())
        .env("ASBB_TEST_RAW", hex)
        .output()
        .ok()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(answer) = stdout.split("<<raw:").nth(1).and_then(|t| t.split(":raw>>").next()) else {
        eprintln!("skipped: uid 65534 could not run the client: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    };
    let bytes: Vec<u8> =
        (0..answer.len() / 2).map(|i| u8::from_str_radix(&answer[2 * i..2 * i + 2], 16).unwrap()).collect();
    Some(String::from_utf8(bytes).unwrap())
}

/// Not a test of its own: the client `raw_as_nobody` runs as another uid. Sends
/// $ASBB_TEST_RAW (hex) on $ASBB_TEST_SOCKET and prints the answer, hex, between markers.
#[test]
fn raw_socket_client() {
    use std::io::{Read, Write};
    let (Ok(socket), Ok(hex)) = (std::env::var("ASBB_TEST_SOCKET"), std::env::var("ASBB_TEST_RAW")) else {
        return;
    };
    let raw: Vec<u8> = (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&raw).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let hex: String = answer.iter().map(|b| format!("{b:02x}")).collect();
    println!("<<raw:{hex}:raw>>");
}

// ----- public endpoints -----------------------------------------------------------------------

#[test]
fn health_and_metrics_answer_without_a_token() {
    let w = world();
    let r = w.call("GET", "/health", None, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "ok");
    assert_eq!(r.json()["schema_version"], 11);
    let r = w.call("GET", "/metrics", None, None);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    for line in [
        "asbb_ledger_up 1",
        "asbb_jobs{state=\"held\"} 1",
        "asbb_jobs{state=\"settled\"} 4",
        "asbb_holds_open 1",
        "asbb_runs_without_hold 1",
        "asbb_cost_updates 0",
        "asbb_performance_feedback 0",
        "asbb_learning_samples 4",
    ] {
        assert!(r.body.lines().any(|l| l == line), "no `{line}` in\n{}", r.body);
    }
    assert!(r.body.lines().any(|l| l.starts_with("asbb_holds_open_dollars 0.")), "{}", r.body);
    assert!(r.body.lines().any(|l| l.starts_with("asbb_reconcile_lag_seconds ")), "{}", r.body);
    assert!(r.body.contains("# TYPE asbb_api_requests_total counter"));
}

/// The sample lines of a scrape, `name{labels}` → value.
fn samples(body: &str) -> std::collections::BTreeMap<String, String> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// What the journal says each account was charged and holds (micros), for checking
/// the maintained totals /metrics reads.
fn journal_figures(w: &World) -> Vec<(String, i64, i64, i64)> {
    let conn = rusqlite::Connection::open(w.ledger()).unwrap();
    let mut s = conn
        .prepare(
            "SELECT a.name,
                    (SELECT count(*) FROM jobs j WHERE j.account_id = a.id AND j.held_micros > 0),
                    coalesce((SELECT sum(CASE kind WHEN 'hold' THEN amount_micros WHEN 'release' THEN -amount_micros ELSE 0 END)
                              FROM journal WHERE account_id = a.id), 0),
                    coalesce((SELECT sum(CASE kind WHEN 'refund' THEN -amount_micros ELSE amount_micros END)
                              FROM journal WHERE account_id = a.id AND kind IN ('charge', 'refund', 'adjustment')), 0)
             FROM accounts a ORDER BY a.name",
        )
        .unwrap();
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap().map(Result::unwrap).collect()
}

/// anonymous scrapes see totals only; a read token sees each account, and
/// the figures (read from maintained totals) agree with the journal.
#[test]
fn metrics_show_accounts_only_to_readers() {
    let w = world();
    // Something in every kind of figure: an adjustment, feedback.
    let body = r#"{"job_id": 101, "cost_data": {"actual_cost": "7.25"}}"#;
    assert_eq!(w.call("POST", "/api/v1/integration/cost-update", Some(INTEGRATION), Some(body)).status, 200);
    let body =
        r#"{"job_id": 104, "estimated_cost": 1, "actual_cost": 1, "estimated_duration": 60, "actual_duration": 60}"#;
    assert_eq!(w.call("POST", "/api/v1/integration/performance-feedback", Some(INTEGRATION), Some(body)).status, 200);

    let anon = w.call("GET", "/metrics", None, None);
    assert_eq!(anon.status, 200, "{}", anon.body);
    assert!(!anon.body.contains("account="), "an account in an anonymous scrape:\n{}", anon.body);
    assert!(!anon.body.contains("asbb_account_"), "{}", anon.body);
    for name in ["chem", "phys"] {
        assert!(!anon.body.contains(name), "{}", anon.body);
    }
    // A bad token is refused, not treated as no token.
    let r = w.call("GET", "/metrics", Some("not-a-token"), None);
    assert_eq!((r.status, error_code(&r).as_str()), (401, "unauthorized"));

    let read = w.call("GET", "/metrics", Some(READ), None);
    assert_eq!(read.status, 200, "{}", read.body);
    let (a, r) = (samples(&anon.body), samples(&read.body));
    // The totals are the same for both; the reader has the accounts besides.
    for (k, v) in &a {
        if !k.starts_with("asbb_api_requests_total") {
            assert_eq!(r.get(k), Some(v), "{k}");
        }
    }
    let figures = journal_figures(&w);
    assert_eq!(figures.len(), 2);
    let dollars = |m: i64| Money::from_micros(m).to_exact_string();
    let (mut holds, mut held) = (0, 0);
    for (name, n, h, charged) in &figures {
        assert_eq!(r[&format!("asbb_account_holds_open{{account=\"{name}\"}}")], n.to_string(), "{name}");
        assert_eq!(r[&format!("asbb_account_holds_open_dollars{{account=\"{name}\"}}")], dollars(*h), "{name}");
        assert_eq!(r[&format!("asbb_account_charged_dollars{{account=\"{name}\"}}")], dollars(*charged), "{name}");
        holds += n;
        held += h;
    }
    assert_eq!(a["asbb_holds_open"], holds.to_string());
    assert_eq!(a["asbb_holds_open_dollars"], dollars(held));
    assert!(held > 0);
    // chem's charges include the adjustment to $7.25 for job 101.
    assert!(figures[0].3 > 7_250_000, "{figures:?}");
    let conn = rusqlite::Connection::open(w.ledger()).unwrap();
    for (metric, table) in [
        ("asbb_cost_updates", "cost_updates"),
        ("asbb_performance_feedback", "performance_feedback"),
        ("asbb_learning_samples", "learning_samples"),
    ] {
        let n: i64 = conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap();
        assert_eq!(a[metric], n.to_string(), "{metric}");
    }
    // Root on the socket is admin: per-account figures too.
    let r = w.unix("GET", "/metrics", None);
    if asbb::cli::current_uid() == 0 {
        assert!(r.body.contains("asbb_account_charged_dollars{account=\"phys\"}"), "{}", r.body);
    }
    // A plain socket user gets the anonymous view.
    if let Some(raw) = raw_as_nobody(&w, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") {
        assert!(raw.starts_with("HTTP/1.1 200 "), "{raw}");
        assert!(raw.contains("asbb_holds_open "), "{raw}");
        assert!(!raw.contains("account="), "{raw}");
    }
}

// ----- authentication and roles -------------------------------------------------------------------

#[test]
fn tokens_and_roles_are_enforced() {
    let w = world();
    let r = w.call("GET", "/api/v1/accounts/chem", None, None);
    assert_eq!((r.status, error_code(&r).as_str()), (401, "unauthorized"));
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"asbb\""));
    let r = w.call("GET", "/api/v1/accounts/chem", Some("not-a-token"), None);
    assert_eq!((r.status, error_code(&r).as_str()), (401, "unauthorized"));
    // A hash is not a token.
    let r = w.call("GET", "/api/v1/accounts/chem", Some(&sha(READ)), None);
    assert_eq!(r.status, 401);
    // read: GET yes, POST no.
    assert_eq!(w.call("GET", "/api/v1/accounts/chem", Some(READ), None).status, 200);
    let before = w.snapshot();
    let body = r#"{"job_id": 101, "cost_data": {"actual_cost": "1.00"}}"#;
    let r = w.call("POST", "/api/v1/integration/cost-update", Some(READ), Some(body));
    assert_eq!((r.status, error_code(&r).as_str()), (403, "forbidden"), "{}", r.body);
    // integration: POST yes, admin-only no.
    let r = w.call("PUT", "/api/v1/accounts/chem/members/bob", Some(INTEGRATION), None);
    assert_eq!(r.status, 403);
    assert_eq!(w.snapshot(), before);
    // admin: everything.
    let r = w.call("PUT", "/api/v1/accounts/chem/members/bob", Some(ADMIN), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["applied"], true);
    let r = w.call("GET", "/api/v1/accounts/chem/members", Some(READ), None);
    assert!(r.json().as_array().unwrap().iter().any(|m| m["user"] == "bob" && m["via"] == "member"), "{}", r.body);
    let r = w.call("DELETE", "/api/v1/accounts/chem/members/bob", Some(ADMIN), None);
    assert_eq!(r.json()["applied"], true);
    // Unknown routes and methods answer JSON too.
    let r = w.call("GET", "/api/v1/nope", Some(ADMIN), None);
    assert_eq!((r.status, error_code(&r).as_str()), (404, "not_found"));
    let r = w.call("DELETE", "/api/v1/budget/check", Some(ADMIN), None);
    assert_eq!((r.status, error_code(&r).as_str()), (405, "method_not_allowed"));
}

// ----- bad input ---------------------------------------------------------------------------------

#[test]
fn bad_bodies_are_refused_and_write_nothing() {
    let w = world();
    let before = w.snapshot();
    let post = |path: &str, body: &str| w.call("POST", path, Some(INTEGRATION), Some(body));
    let cu = "/api/v1/integration/cost-update";
    let fb = "/api/v1/integration/performance-feedback";
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (cu, r#"{"job_id": 101, "cost_data": {"actual_cost": "1.00"}, "extra": 1}"#.into(), 400, "invalid_body"),
        (cu, r#"{"job_id": 101, "cost_data": {"compute_cost": 1}}"#.into(), 400, "invalid_body"),
        (cu, r#"{"job_id": 101, "cost_data": {"actual_cost": "1.00""#.into(), 400, "malformed_json"),
        (cu, "not json".into(), 400, "malformed_json"),
        (cu, String::new(), 400, "invalid_body"),
        (cu, r#"{"job_id": 101}"#.into(), 400, "invalid_body"),
        (cu, r#"{"job_id": 101, "cost_data": {"actual_cost": 1e3}}"#.into(), 422, "invalid"),
        (cu, r#"{"job_id": 101, "cost_data": {"actual_cost": -5}}"#.into(), 422, "invalid"),
        (cu, r#"{"job_id": 101, "cost_data": {"actual_cost": "12.3456789"}}"#.into(), 422, "invalid"),
        (cu, r#"{"job_id": "x", "cost_data": {"actual_cost": 1}}"#.into(), 422, "invalid"),
        (cu, r#"{"job_id": 101, "source": "bad source!", "cost_data": {"actual_cost": 1}}"#.into(), 400, "invalid_body"),
        (cu, format!(r#"{{"job_id": 101, "cost_data": {{"actual_cost": 1}}, "metadata": "{}"}}"#, "x".repeat(70_000)), 413, "payload_too_large"),
        (fb, r#"{"job_id": 101, "estimated_cost": 1, "actual_cost": 1, "estimated_duration": 1, "actual_duration": 1, "rating": 3}"#.into(), 400, "invalid_body"),
        (fb, r#"{"job_id": 101, "estimated_cost": "1,0", "actual_cost": 1, "estimated_duration": 1, "actual_duration": 1}"#.into(), 422, "invalid"),
        ("/api/v1/budget/check", r#"{"account": "chem", "partition": "debug", "time": "2h", "gpu": 1}"#.into(), 400, "invalid_body"),
        ("/api/v1/budget/check", r#"{"account": "chem", "partition": "debug", "time": "forever"}"#.into(), 422, "invalid"),
    ];
    for (path, body, status, code) in cases {
        let r = post(path, &body);
        assert_eq!(
            (r.status, error_code(&r).as_str()),
            (status, code),
            "{path} {}: {}",
            &body[..body.len().min(90)],
            r.body
        );
        assert!(!r.json()["error"]["message"].as_str().unwrap_or_default().is_empty(), "{}", r.body);
    }
    assert_eq!(w.snapshot(), before);
    w.verify_clean();
}

/// A quote's shape takes one of each pair of fields, as the command line's flags do
/// (`--cpus` or `--cpus-per-node`, ...): the API used to pick one silently.
#[test]
fn a_quote_with_two_answers_to_one_question_is_refused() {
    let w = world();
    let before = w.snapshot();
    let base = r#""account": "chem", "partition": "debug", "time": "2h""#;
    for (extra, message) in [
        (r#""cpus": 2, "cpus_per_node": 2"#, "give cpus or cpus_per_node, not both"),
        (r#""mem": "1G", "mem_per_cpu": "1G""#, "give mem or mem_per_cpu, not both"),
        (r#""gpus": 1, "gres": "gpu:a100:1""#, "give gpus or gres, not both"),
        (r#""mem_mb": 100, "mem": "1G""#, "give one of mem, mem_per_cpu or mem_mb"),
    ] {
        let r = w.call("POST", "/api/v1/budget/check", Some(INTEGRATION), Some(&format!("{{{base}, {extra}}}")));
        assert_eq!((r.status, error_code(&r).as_str()), (422, "invalid"), "{extra}: {}", r.body);
        assert_eq!(r.json()["error"]["message"], message, "{}", r.body);
    }
    assert_eq!(w.snapshot(), before);
}

#[test]
fn unknown_ambiguous_and_unpriced_jobs_are_4xx() {
    let w = world();
    let before = w.snapshot();
    let r = w.call("GET", "/api/v1/integration/budget-context/999", Some(READ), None);
    assert_eq!((r.status, error_code(&r).as_str()), (404, "unknown_job"), "{}", r.body);
    let r = w.call("GET", "/api/v1/integration/budget-context/abc", Some(READ), None);
    assert_eq!((r.status, error_code(&r).as_str()), (400, "invalid_job_id"));
    let r = w.call("GET", "/api/v1/integration/budget-context/101?color=red", Some(READ), None);
    assert_eq!((r.status, error_code(&r).as_str()), (400, "invalid_query"));
    let r = w.call("GET", "/api/v1/integration/budget-context/105", Some(READ), None);
    assert_eq!((r.status, error_code(&r).as_str()), (409, "ambiguous_job"), "{}", r.body);
    assert!(r.body.contains("c1, c2"), "{}", r.body);
    let r = w.call("GET", "/api/v1/integration/budget-context/105?cluster=c2", Some(READ), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["cluster"], "c2");
    let r = w.call("GET", "/api/v1/integration/budget-context/101?cluster=c9", Some(READ), None);
    assert_eq!(r.status, 404);
    let body = r#"{"job_id": 999, "cost_data": {"actual_cost": "1.00"}}"#;
    let r = w.call("POST", "/api/v1/integration/cost-update", Some(INTEGRATION), Some(body));
    assert_eq!((r.status, error_code(&r).as_str()), (404, "unknown_job"));
    let body = r#"{"job_id": 103, "cost_data": {"actual_cost": "1.00"}}"#;
    let r = w.call("POST", "/api/v1/integration/cost-update", Some(INTEGRATION), Some(body));
    assert_eq!((r.status, error_code(&r).as_str()), (409, "job_not_priced"), "{}", r.body);
    let body =
        r#"{"job_id": 999, "estimated_cost": 1, "actual_cost": 1, "estimated_duration": 60, "actual_duration": 60}"#;
    let r = w.call("POST", "/api/v1/integration/performance-feedback", Some(INTEGRATION), Some(body));
    assert_eq!((r.status, error_code(&r).as_str()), (404, "unknown_job"));
    assert_eq!(w.call("GET", "/api/v1/accounts/nope", Some(READ), None).status, 404);
    let r = w.call("GET", "/api/v1/grants/NOPE/report", Some(READ), None);
    assert_eq!((r.status, error_code(&r).as_str()), (404, "unknown_grant"), "{}", r.body);
    assert_eq!(w.snapshot(), before);
}

// ----- cost updates ---------------------------------------------------------------------------------

#[test]
fn cost_update_adjusts_once_and_keeps_verify_clean() {
    let w = world();
    let ctx = w.call("GET", "/api/v1/integration/budget-context/101", Some(READ), None).json();
    let charged = Money::parse(ctx["actual"].as_str().unwrap()).unwrap();
    assert!(charged.micros() > 0);
    // Up: actual = charged + $2.345678 (a JSON number, read exactly).
    let actual = Money::from_micros(charged.micros() + 2_345_678);
    let body = format!(
        r#"{{"job_id": 101, "cluster": "c1", "performance_data": {{"cpu_efficiency": 0.8}},
            "cost_data": {{"actual_cost": {}, "compute_cost": "2.00", "storage_cost": 0.1, "network_cost": "0.05",
                           "spot_savings": 1.5, "instance_types": ["c5.large"]}},
            "metadata": {{"research_domain": "chemistry"}}}}"#,
        actual.to_exact_string()
    );
    let r = w.call("POST", "/api/v1/integration/cost-update", Some(INTEGRATION), Some(&body));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["applied"], true);
    assert_eq!(v["source"], "launcher");
    assert_eq!(v["adjustment"], "2.345678");
    assert_eq!(v["net_charge"], actual.to_exact_string());
    assert_eq!(v["journal_key"], "adjust:c1:101:launcher");
    w.verify_clean();
    // Replay: 200, nothing applied, one adjustment in the journal.
    let before = w.snapshot();
    let r = w.call("POST", "/api/v1/integration/cost-update", Some(INTEGRATION), Some(&body));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["applied"], false);
    assert_eq!(r.json()["adjustment"], "2.345678");
    assert_eq!(w.snapshot(), before);
    assert!(w.adjustments("adjust:c1:101:launcher") >= 1);
    // The same source with a different cost is a conflict.
    let other = body.replace(&actual.to_exact_string(), "1.00");
    let r = w.call("POST", "/api/v1/integration/cost-update", Some(INTEGRATION), Some(&other));
    assert_eq!((r.status, error_code(&r).as_str()), (409, "conflict"), "{}", r.body);
    assert_eq!(w.snapshot(), before);
    // Another caller (another source) brings it down below the run's charge: money goes back.
    let body = r#"{"job_id": 101, "cost_data": {"actual_cost": "0.05"}}"#;
    let r = w.call("POST", "/api/v1/integration/cost-update", Some(ADMIN), Some(body));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["source"], "boss");
    assert_eq!(r.json()["journal_key"], "adjust:c1:101:boss");
    assert_eq!(r.json()["net_charge"], "0.05");
    assert!(r.json()["adjustment"].as_str().unwrap().starts_with('-'));
    w.verify_clean();
    // The context shows it all.
    let ctx = w.call("GET", "/api/v1/integration/budget-context/101", Some(READ), None).json();
    assert_eq!(ctx["actual"], "0.05");
    assert_eq!(ctx["account"]["name"], "chem");
    assert_eq!(ctx["grant"]["number"], "NSF-1");
    assert_eq!(ctx["cost_updates"][0]["metadata"]["research_domain"], "chemistry");
    assert_eq!(ctx["cost_updates"].as_array().unwrap().len(), 2);
    assert_eq!(ctx["cost_updates"][0]["spot_savings"], "1.50");
    assert_eq!(ctx["runs"][0]["cluster"], "c1");
    // A job still running cannot be adjusted yet.
    let ctx = w.call("GET", "/api/v1/accounts/chem", Some(READ), None).json();
    assert!(ctx["available"].as_str().is_some());
}

/// the source of a cost update is the caller; a body cannot name one, so no
/// client can pose as another or as the importer (whose one-time key stays free).
#[test]
fn cost_update_source_is_the_caller() {
    let w = world();
    let before = w.snapshot();
    for source in ["aws-import", "launcher", "boss"] {
        let body = format!(r#"{{"job_id": 101, "source": "{source}", "cost_data": {{"actual_cost": "1.00"}}}}"#);
        let r = w.call("POST", "/api/v1/integration/cost-update", Some(INTEGRATION), Some(&body));
        assert_eq!(
            (r.status, r.body.as_str()),
            (
                400,
                r#"{"error":{"code":"invalid_body","message":"unknown field `source`, expected one of `job_id`, `cluster`, `performance_data`, `cost_data`, `metadata` at line 1 column 24"}}"#
            ),
        );
    }
    assert_eq!(w.snapshot(), before);
    let body = r#"{"job_id": 101, "cost_data": {"actual_cost": "1.00"}}"#;
    let r = w.call("POST", "/api/v1/integration/cost-update", Some(INTEGRATION), Some(body));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["source"], "launcher");
    assert_eq!(r.json()["journal_key"], "adjust:c1:101:launcher");
    // The importer's key for job 101 is still free: its file applies.
    let dir = w.dir.path().join("import");
    std::fs::create_dir(&dir).unwrap();
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir().join("job-201-asbb-reconciliation.json")).unwrap())
            .unwrap();
    file["job_id"] = 101.into();
    file["partition"] = "debug".into();
    std::fs::write(dir.join("job-101-asbb-reconciliation.json"), file.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_asbb-admin"))
        .args(["integration", "import-costs"])
        .arg(&dir)
        .env("ASBB_CONFIG", w.config_file())
        .env("ASBB_LEDGER", w.ledger())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("job-101-asbb-reconciliation.json: applied: job 101 (chem) actual $0.25"), "{stdout}");
    assert!(w.adjustments("adjust:c1:101:aws-import") >= 1);
    assert_eq!(w.cost_update_rows("aws-import"), 1);
    w.verify_clean();
    // A configuration naming a token after the importer does not load.
    let text =
        std::fs::read_to_string(w.config_file()).unwrap().replace("name = \"launcher\"", "name = \"aws-import\"");
    let e = Config::parse(&text, "asbb.toml").unwrap_err().to_string();
    assert!(e.starts_with("asbb.toml: api.tokens: the name 'aws-import' is reserved"), "{e}");
}

#[test]
fn a_job_still_running_is_not_adjusted() {
    let w = world();
    let mut b = w.budget();
    let r = req("chem", "debug", 1, 30, Some(777));
    let token = match b.check_and_hold(&r, now()).unwrap() {
        Decision::Accept { token, .. } => token,
        d => panic!("{d:?}"),
    };
    drop(b);
    let before = w.snapshot();
    let body = r#"{"job_id": 777, "cost_data": {"actual_cost": "1.00"}}"#;
    let resp = w.call("POST", "/api/v1/integration/cost-update", Some(INTEGRATION), Some(body));
    assert_eq!((resp.status, error_code(&resp).as_str()), (409, "job_not_settled"), "{}", resp.body);
    assert_eq!(w.snapshot(), before);
    // Its context is there already (found by the id known at submit).
    let ctx = w.call("GET", "/api/v1/integration/budget-context/777", Some(READ), None);
    assert_eq!(ctx.status, 200, "{}", ctx.body);
    assert_eq!(ctx.json()["token"], token);
    assert_eq!(ctx.json()["state"], "held");
    assert_eq!(ctx.json()["cluster"], serde_json::Value::Null);
}

// ----- feedback, context, check, accounts, grants, me -----------------------------------------------

#[test]
fn feedback_is_recorded_once_as_a_learning_sample() {
    let w = world();
    let body = r#"{"job_id": 104, "estimated_cost": "2.00", "actual_cost": 1.25, "estimated_duration": 7200,
                   "actual_duration": 3599.6, "performance_rating": 4.5, "optimization_hints": ["use spot", "fewer cores"]}"#;
    let r = w.call("POST", "/api/v1/integration/performance-feedback", Some(INTEGRATION), Some(body));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["applied"], true);
    assert_eq!(r.json()["learning_sample"], true);
    assert_eq!(r.json()["account"], "phys");
    let before = w.snapshot();
    let r = w.call("POST", "/api/v1/integration/performance-feedback", Some(INTEGRATION), Some(body));
    assert_eq!((r.status, r.json()["applied"].clone()), (200, serde_json::Value::Bool(false)));
    assert_eq!(w.snapshot(), before);
    let conn = rusqlite::Connection::open(w.ledger()).unwrap();
    let (e, a, es, as_): (i64, i64, i64, i64) = conn
        .query_row(
            "SELECT estimate_micros, actual_micros, estimated_s, actual_s FROM learning_samples WHERE source = 'feedback'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!((e, a, es, as_), (2_000_000, 1_250_000, 7200, 3600));
    let ctx = w.call("GET", "/api/v1/integration/budget-context/104", Some(READ), None).json();
    assert_eq!(ctx["feedback"]["performance_rating"], "4.5");
    assert_eq!(ctx["feedback"]["optimization_hints"][1], "fewer cores");
    assert_eq!(ctx["grant"], serde_json::Value::Null);
}

#[test]
fn budget_context_check_accounts_grant_report_and_me() {
    let w = world();
    let ctx = w.call("GET", "/api/v1/integration/budget-context/102", Some(READ), None);
    // 102 never ran and SLURM's id was not known at submit: not findable by id.
    assert_eq!(ctx.status, 404);
    let ctx = w.call("GET", "/api/v1/integration/budget-context/101", Some(READ), None).json();
    for key in ["estimate", "hold_placed", "hold", "actual"] {
        Money::parse(ctx[key].as_str().unwrap()).unwrap();
    }
    assert_eq!(ctx["state"], "settled");
    assert_eq!(ctx["hold"], "0.00");
    assert_eq!(ctx["request"]["partition"], "debug");
    let acc = &ctx["account"];
    assert!(Money::parse(acc["burn_rate_per_day"].as_str().unwrap()).is_ok());
    assert!(acc["days_until_exhausted"].is_i64() || acc["days_until_exhausted"].is_null());
    // A quote: nothing held.
    let before = w.snapshot();
    let body =
        r#"{"account": "chem", "partition": "debug", "nodes": 2, "cpus_per_node": 4, "mem": "4G", "time": "2h"}"#;
    let r = w.call("POST", "/api/v1/budget/check", Some(INTEGRATION), Some(body));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!((v["decision"].as_str(), v["fits"].as_bool()), (Some("accept"), Some(true)));
    assert_eq!(v["estimate"], "0.40");
    assert_eq!(v["hold"], "0.40");
    let body = r#"{"account": "phys", "partition": "aws", "nodes": 100, "time": "1d"}"#;
    let v = w.call("POST", "/api/v1/budget/check", Some(INTEGRATION), Some(body)).json();
    assert_eq!(v["decision"], "reject");
    assert!(v["reason"].as_str().unwrap().contains("cannot cover"), "{v}");
    assert_eq!(w.call("POST", "/api/v1/budget/check", Some(READ), Some(body)).status, 403);
    assert_eq!(w.snapshot(), before);
    // Accounts.
    let v = w.call("GET", "/api/v1/accounts", Some(READ), None).json();
    assert_eq!(v.as_array().unwrap().len(), 2);
    let v = w.call("GET", "/api/v1/accounts/phys", Some(READ), None).json();
    assert_eq!(v["allocated"], "50.00");
    // The grant's report, delegated to the grants module.
    let r = w.call("GET", "/api/v1/grants/NSF-1/report?format=json", Some(READ), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.body.contains("NSF-1"));
    let r = w.call("GET", "/api/v1/grants/NSF-1/report?format=pdf", Some(READ), None);
    assert_eq!((r.status, error_code(&r).as_str()), (400, "invalid_query"));
    // me: a token is not a user; read roles see every account.
    let v = w.call("GET", "/api/v1/me", Some(READ), None).json();
    assert_eq!(v["role"], "read");
    assert_eq!(v["accounts"].as_array().unwrap().len(), 2);
}

// ----- the unix socket -----------------------------------------------------------------------------

#[test]
fn unix_socket_maps_the_peer_to_a_role() {
    let w = world();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(w.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666);
    let me = asbb::cli::current_uid();
    let r = w.unix("GET", "/api/v1/me", None);
    assert_eq!(r.status, 200, "{}", r.body);
    if me == 0 {
        assert_eq!(r.json()["role"], "admin");
        let r = w.unix("PUT", "/api/v1/accounts/chem/members/65534", None);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // No token needed for anything on the socket; the uid decides.
    assert_eq!(w.unix("GET", "/health", None).status, 200);
    // The role rules, without changing uid.
    let api_config = asbb::core::config::ApiConfig {
        peers: vec![
            asbb::core::config::ApiPeer { user: None, uid: Some(4242), role: ApiRole::Integration },
            asbb::core::config::ApiPeer { user: Some("burstd".into()), uid: None, role: ApiRole::Read },
        ],
        ..Default::default()
    };
    assert_eq!(api_config.local_role(0, Some("root"), Some(999)), ApiRole::Admin);
    assert_eq!(api_config.local_role(999, Some("slurm"), Some(999)), ApiRole::Admin);
    assert_eq!(api_config.local_role(4242, None, Some(999)), ApiRole::Integration);
    assert_eq!(api_config.local_role(5000, Some("burstd"), Some(999)), ApiRole::Read);
    assert_eq!(api_config.local_role(5001, Some("eve"), Some(999)), ApiRole::User);
    assert_eq!(api_config.local_role(5002, None, None), ApiRole::User);
}

/// `asbb` run as an ordinary user cannot open the 0600 ledger and asks the
/// service's socket, which shows them only their accounts.
#[test]
fn asbb_as_a_user_reads_its_accounts_through_the_socket() {
    let setpriv = Path::new("/usr/bin/setpriv");
    if asbb::cli::current_uid() != 0 || !setpriv.exists() {
        eprintln!("skipped: needs root and setpriv to run asbb as another user");
        return;
    }
    // CI may build where another user cannot reach the binary (e.g. under /root).
    let reachable = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_asbb"), "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !reachable {
        eprintln!("skipped: uid 65534 cannot run {}", env!("CARGO_BIN_EXE_asbb"));
        return;
    }
    let w = world();
    use std::os::unix::fs::PermissionsExt;
    for p in [w.dir.path().to_path_buf(), w.dir.path().join("run")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(w.config_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let as_nobody = |args: &[&str]| {
        let out = Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_asbb")])
            .args(args)
            .env("ASBB_CONFIG", w.config_file())
            .env("ASBB_SOCKET", w.socket())
            .env_remove("ASBB_LEDGER")
            .env_remove("ASBB_ACCOUNT")
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.status.code(),
        )
    };
    // Not a member of anything yet.
    let (out, err, code) = as_nobody(&["--format", "json", "status"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "[]");
    let (_, err, code) = as_nobody(&["remaining", "-A", "chem"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("may read only accounts"), "{err}");
    // An admin adds them (by uid) to chem.
    let out = Command::new(env!("CARGO_BIN_EXE_asbb-admin"))
        .args(["account", "member", "add", "chem", "65534"])
        .env("ASBB_CONFIG", w.config_file())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (out, err, code) = as_nobody(&["status"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.lines().nth(1).unwrap_or_default().starts_with("chem "), "{out}");
    assert!(!out.contains("phys"));
    // Their grants: those funding chem, not phys's.
    let out = Command::new(env!("CARGO_BIN_EXE_asbb-admin"))
        .args([
            "grant",
            "create",
            "--number",
            "DOE-9",
            "--agency",
            "DOE",
            "--pi",
            "Enrico",
            "--amount",
            "40",
            "--start",
            "2020-01-01",
            "--end",
            "2099-12-31",
            "--indirect-rate",
            "0",
            "--account",
            "phys",
        ])
        .env("ASBB_CONFIG", w.config_file())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (out, err, code) = as_nobody(&["--format", "csv", "grants"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[1].starts_with("NSF-1,NSF,Ada,chem,"), "{out}");
    let (out, err, code) = as_nobody(&["grant", "report", "NSF-1"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("NSF-1"), "{out}");
    let (out, err, code) = as_nobody(&["--format", "json", "grant", "report", "NSF-1"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["grant"]["number"], "NSF-1");
    let (_, err, code) = as_nobody(&["grant", "report", "DOE-9"]);
    assert_eq!((code, err.as_str()), (Some(2), "asbb: error: unknown grant 'DOE-9'\n"));
    let (out, _, code) = as_nobody(&[
        "quick-check",
        "-A",
        "chem",
        "-p",
        "debug",
        "-N",
        "2",
        "--cpus-per-node",
        "4",
        "--mem",
        "4G",
        "-t",
        "2h",
    ]);
    assert_eq!(code, Some(0));
    assert!(out.contains("Estimate:   $0.40"), "{out}");
    let (out, _, code) = as_nobody(&["--format", "json", "quick-check", "-A", "phys", "-p", "debug", "-t", "1h"]);
    assert_eq!(code, Some(2), "{out}");
    // Without the socket the user gets the ledger's own error.
    let out = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_asbb"), "status"])
        .env("ASBB_CONFIG", w.config_file())
        .env_remove("ASBB_SOCKET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// a socket user asking for a job they may not see gets exactly the answer
/// for a job id that does not exist (status, headers and body; only the date differs).
#[test]
fn budget_context_hides_other_accounts_jobs_from_socket_users() {
    let w = world();
    let get = |path: &str| {
        raw_as_nobody(&w, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).map(|raw| {
            raw.lines().filter(|l| !l.to_ascii_lowercase().starts_with("date:")).collect::<Vec<_>>().join("\n")
        })
    };
    let ctx = "/api/v1/integration/budget-context";
    let Some(unknown) = get(&format!("{ctx}/999")) else {
        return;
    };
    assert!(unknown.starts_with("HTTP/1.1 404 Not Found\n"), "{unknown}");
    assert!(unknown.ends_with(r#"{"error":{"code":"unknown_job","message":"no job 999 in the ledger"}}"#), "{unknown}");
    // 101 (settled), 105 (two clusters), 103 (ran without a hold): all in chem, which
    // uid 65534 neither ran jobs in nor is a member of; 102 has no known id. Byte for
    // byte the answer for 999, but for the id.
    for (id, query) in
        [("101", ""), ("105", ""), ("103", ""), ("102", ""), ("101", "?cluster=c1"), ("105", "?cluster=c2")]
    {
        let hidden = get(&format!("{ctx}/{id}{query}")).unwrap();
        let absent = get(&format!("{ctx}/999{query}")).unwrap();
        assert_eq!(hidden, absent.replace("999", id), "{id}{query}");
    }
    // A member of chem sees its jobs.
    let mut b = w.budget();
    b.add_member("chem", "nobody", Some(65534), "test", now()).unwrap();
    drop(b);
    let seen = get(&format!("{ctx}/101")).unwrap();
    assert!(seen.starts_with("HTTP/1.1 200 OK\n"), "{seen}");
    let seen = get(&format!("{ctx}/105")).unwrap();
    assert!(seen.starts_with("HTTP/1.1 409 Conflict\n"), "{seen}");
    assert_eq!(get(&format!("{ctx}/999")).unwrap(), unknown);
}

// ----- the burst launcher's files ---------------------------------------------------------------------

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/import")
}

#[test]
fn import_costs_applies_skips_and_refuses_per_file() {
    let w = world();
    {
        // The jobs the sample files name: 201 and 202 on aws (chem), 204 on debug (phys).
        let mut b = w.budget();
        job(&mut b, "chem", "aws", 201, "c1", Some(3_600));
        job(&mut b, "chem", "aws", 202, "c1", Some(3_600));
        job(&mut b, "phys", "debug", 204, "c1", Some(600));
    }
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_asbb-admin"))
            .args(["integration", "import-costs"])
            .arg(data_dir())
            .env("ASBB_CONFIG", w.config_file())
            .env("ASBB_LEDGER", w.ledger())
            .output()
            .unwrap();
        (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap(), out.status.code())
    };
    let (out, err, code) = run();
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(err, "asbb-admin: error: 7 files refused\n");
    let lines: Vec<&str> = out.lines().collect();
    let expect = [
        "job-201-asbb-reconciliation.json: applied: job 201 (chem) actual $0.25, was charged $0.09, adjustment +$0.17",
        "job-202-asbb-reconciliation.json: applied: job 202 (chem) actual $0.05, was charged $0.09, adjustment -$0.04",
        "job-203-asbb-reconciliation.json: refused: no job 203 in the ledger",
        "job-204-asbb-reconciliation.json: refused: job 204 is charged to account phys in the ledger, not chem",
        "job-205-asbb-reconciliation.json: refused: not a reconciliation file: EOF while parsing a value at line 4 column 0",
        "job-206-asbb-reconciliation.json: refused: not a reconciliation file: unknown field `gpu_cost`, expected one of `job_id`, `account`, `user_id`, `partition`, `actual_cost`, `compute_cost`, `storage_cost`, `network_cost`, `spot_savings`, `instance_types`, `duration_hours`, `success`, `export_time`, `plugin_version` at line 1 column 65",
        "job-207-asbb-reconciliation.json: refused: actual_cost: amount '1e3' is not a decimal number like 1250.50",
        "job-208-asbb-reconciliation.json: refused: job_id 209 does not match the file name's job 208",
        "job-210-asbb-reconciliation.json: refused: actual_cost: amount '-3.00' is negative; amounts must be zero or more",
        "imported 9 files: 2 applied, 0 skipped (applied before), 7 refused",
    ];
    assert_eq!(lines, expect, "\n{out}");
    w.verify_clean();
    // Again: the two applied are skipped, nothing changes.
    let before = w.snapshot();
    let (out, _, code) = run();
    assert_eq!(code, Some(1));
    assert!(
        out.contains(
            "job-201-asbb-reconciliation.json: skipped: job 201 already has this actual cost ($0.25) from aws-import"
        ),
        "{out}"
    );
    assert!(out.ends_with("imported 9 files: 0 applied, 2 skipped (applied before), 7 refused\n"), "{out}");
    assert_eq!(w.snapshot(), before);
    w.verify_clean();
    // One good file alone exits 0.
    let out = Command::new(env!("CARGO_BIN_EXE_asbb-admin"))
        .args(["--format", "json", "integration", "import-costs"])
        .arg(data_dir().join("job-201-asbb-reconciliation.json"))
        .env("ASBB_CONFIG", w.config_file())
        .env("ASBB_LEDGER", w.ledger())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"][0]["outcome"], "skipped");
    assert_eq!(v["files"][0]["actual"], "0.25");
    // The file's parts and metadata are in the job's context.
    let ctx = w.call("GET", "/api/v1/integration/budget-context/201", Some(READ), None).json();
    assert_eq!(ctx["actual"], "0.25");
    assert_eq!(ctx["cost_updates"][0]["source"], "aws-import");
    assert_eq!(ctx["cost_updates"][0]["compute"], "0.20");
    assert_eq!(ctx["cost_updates"][0]["instance_types"][0], "c5.large");
    assert_eq!(ctx["cost_updates"][0]["metadata"]["duration_s"], 3780);
    assert_eq!(ctx["cost_updates"][0]["metadata"]["plugin_version"], "1.4.2");
}

/// only small regular files of root, SlurmUser or the caller are read; a FIFO,
/// a symlink (to /dev/zero), a folder, an oversized file and another user's file are each
/// refused with why, at once, and the good file beside them is still applied.
#[test]
fn import_costs_reads_only_small_regular_files_of_trusted_owners() {
    use std::os::unix::fs::symlink;
    if asbb::cli::current_uid() != 0 {
        eprintln!("skipped: needs root to give a file to uid 65534");
        return;
    }
    let w = world();
    job(&mut w.budget(), "chem", "aws", 201, "c1", Some(3_600));
    let dir = w.dir.path().join("import");
    std::fs::create_dir(&dir).unwrap();
    let name = |id: u32| dir.join(format!("job-{id}-asbb-reconciliation.json"));
    std::fs::copy(data_dir().join("job-201-asbb-reconciliation.json"), name(201)).unwrap();
    assert!(Command::new("mkfifo").arg(name(301)).status().unwrap().success());
    symlink("/dev/zero", name(302)).unwrap();
    std::fs::write(name(303), vec![b' '; 64 * 1024 + 1]).unwrap();
    std::fs::write(name(304), std::fs::read(name(201)).unwrap()).unwrap();
    std::os::unix::fs::chown(name(304), Some(65534), Some(65534)).unwrap();
    std::fs::create_dir(name(305)).unwrap();

    let started = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_asbb-admin"))
        .args(["integration", "import-costs"])
        .arg(&dir)
        .env("ASBB_CONFIG", w.config_file())
        .env("ASBB_LEDGER", w.ledger())
        .env("SLURM_CONF", w.dir.path().join("no-slurm.conf"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("import-costs still runs after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let (stdout, stderr) = (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap());
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stderr, "asbb-admin: error: 5 files refused\n");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "job-201-asbb-reconciliation.json: applied: job 201 (chem) actual $0.25, was charged $0.09, adjustment +$0.17",
            "job-301-asbb-reconciliation.json: refused: it is a FIFO, not a regular file",
            "job-302-asbb-reconciliation.json: refused: it is a symbolic link, not a regular file",
            "job-303-asbb-reconciliation.json: refused: 65537 bytes is over the limit of 65536 bytes",
            "job-304-asbb-reconciliation.json: refused: it is owned by uid 65534, not root, SlurmUser or the caller",
            "job-305-asbb-reconciliation.json: refused: it is a folder, not a regular file",
            "imported 6 files: 1 applied, 0 skipped (applied before), 5 refused",
        ],
        "\n{stdout}"
    );
    w.verify_clean();
}

/// `serve` binds its socket through no symlink, replaces only a stale socket of
/// its own, and never in a folder others can write to without the sticky bit.
#[test]
fn serve_socket_follows_no_symlink_and_replaces_only_its_own_stale_socket() {
    use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
    let w = world();
    let d = w.dir.path();
    let serve = |sock: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_asbb-admin"))
            .args(["serve", "--quiet", "--socket"])
            .arg(sock)
            .env("ASBB_CONFIG", w.config_file())
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stderr).unwrap())
    };
    let victim = d.join("victim");
    std::fs::write(&victim, "keep\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = d.join("link.sock");
    symlink(&victim, &link).unwrap();
    assert_eq!(
        serve(&link),
        (Some(2), format!("asbb-admin: error: {} is a symbolic link; not replacing it\n", link.display()))
    );
    assert_eq!(std::fs::metadata(&victim).unwrap().mode() & 0o7777, 0o600);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(
        serve(&victim),
        (Some(2), format!("asbb-admin: error: {} exists and is not a socket; not replacing it\n", victim.display()))
    );
    let shared = d.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let sock = shared.join("api.sock");
    assert_eq!(
        serve(&sock),
        (
            Some(2),
            format!(
                "asbb-admin: error: cannot listen on {}: its folder {} can be written by others (mode 0777) and has no sticky bit\n",
                sock.display(),
                shared.display()
            )
        )
    );
    assert!(!sock.exists());
    if asbb::cli::current_uid() == 0 {
        // Another user's stale socket is left alone.
        let theirs = d.join("theirs.sock");
        drop(std::os::unix::net::UnixListener::bind(&theirs).unwrap());
        std::os::unix::fs::lchown(&theirs, Some(65534), Some(65534)).unwrap();
        assert_eq!(
            serve(&theirs),
            (Some(2), format!("asbb-admin: error: {} is a socket of uid 65534; not replacing it\n", theirs.display()))
        );
        assert!(std::fs::symlink_metadata(&theirs).unwrap().file_type().is_socket());
    }
}

/// The command line serves too (and refuses a non-loopback address).
#[test]
fn asbb_admin_serve_runs_and_refuses_public_addresses() {
    let w = world();
    let out = Command::new(env!("CARGO_BIN_EXE_asbb-admin"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env("ASBB_CONFIG", w.config_file())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_asbb-admin"))
        .args(["serve", "--quiet", "--socket"])
        .arg(w.dir.path().join("cli.sock"))
        .env("ASBB_CONFIG", w.config_file())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let sock = w.dir.path().join("cli.sock");
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(r) = request(&Target::Unix(&sock), "GET", "/health", &[], None, Duration::from_secs(5)) {
            ok = r.status == 200;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(ok, "the served socket did not answer");
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists(), "the socket file is removed on exit");
}

// ----- the learning bound ---------------------------------------------------------------------------------

fn learning(min_ppm: i64, min_samples: u32, window: u32, percentile: u32) -> LearningConfig {
    LearningConfig {
        enabled: true,
        min_hold_factor_ppm: min_ppm,
        min_samples,
        window_samples: window,
        percentile,
        include_feedback: true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    /// The factor is always within [min, 1]; the hold within [min × estimate, estimate].
    #[test]
    fn learned_holds_stay_within_the_bound(
        ratios in proptest::collection::vec(0i64..20_000_000, 0..300),
        min_ppm in 1i64..=1_000_000,
        min_samples in 1u32..50,
        percentile in 50u32..=100,
        estimate in 0i64..1_000_000_000_000,
    ) {
        let cfg = learning(min_ppm, min_samples, 300, percentile);
        let factor = factor_from_ratios(&ratios, &cfg);
        if ratios.len() < min_samples as usize {
            prop_assert_eq!(factor, None);
        }
        let f = factor.unwrap_or(PPM);
        prop_assert!(f >= min_ppm && f <= PPM);
        let hold = hold_from_factor(Money::from_micros(estimate), f).micros();
        prop_assert!(hold <= estimate);
        prop_assert!(hold as i128 * PPM as i128 >= min_ppm as i128 * estimate as i128, "hold {} < {} × {}", hold, min_ppm, estimate);
    }

    /// The same through a real ledger: whatever the samples, hold_for stays in bounds.
    #[test]
    fn hold_for_on_a_ledger_stays_within_the_bound(
        samples in proptest::collection::vec((1i64..10_000_000, 0i64..30_000_000), 0..60),
        min_ppm in 1i64..=1_000_000,
        estimate in 1i64..10_000_000_000,
    ) {
        let cfg = learning(min_ppm, 10, 40, 90);
        let mut ledger = asbb::core::ledger::Ledger::in_memory().unwrap();
        let conn = ledger.connection();
        conn.execute("INSERT INTO accounts (name, created_at) VALUES ('a', 0)", []).unwrap();
        for (i, (e, a)) in samples.iter().enumerate() {
            conn.execute(
                "INSERT INTO learning_samples (sample_key, source, account_id, partition, estimate_micros, actual_micros, at)
                 VALUES (?1, 'run', 1, 'p', ?2, ?3, 0)",
                rusqlite::params![format!("k{i}"), e, a],
            ).unwrap();
        }
        let hold = hold_for_ledger(&mut ledger, 1, "p", "", Money::from_micros(estimate), &cfg).unwrap().micros();
        prop_assert!(hold <= estimate);
        prop_assert!(hold as i128 * PPM as i128 >= min_ppm as i128 * estimate as i128);
        if samples.len() < 10 {
            prop_assert_eq!(hold, estimate);
        }
    }
}

#[test]
fn job_metadata_in_quotes_cost_data_as_sent_and_partial_feedback() {
    let w = world();
    let base = r#""account": "chem", "partition": "debug", "cpus": 4, "time": "2h""#;
    let quote = |metadata: &str| {
        let body = format!("{{{base}, \"job_metadata\": {metadata}}}");
        w.call("POST", "/api/v1/budget/check", Some(INTEGRATION), Some(&body))
    };
    // What the plugin applies: max_cost, the named grant.
    let v = quote(r#"{"cost_constraints": {"max_cost": "0.05"}, "research_domain": "chemistry"}"#).json();
    assert_eq!(v["decision"], "reject");
    assert_eq!(
        v["reason"],
        "asbb: estimate $0.16 is above your max_cost $0.05; request less time or fewer resources, or raise max_cost"
    );
    let v = quote(r#"{"grant_number": "NIH-9"}"#).json();
    assert_eq!(v["reason"], "asbb: grant 'NIH-9' is not known to asbb; check the grant number");
    let v = quote(r#"{"grant_number": "NSF-1", "project_code": "p7", "mpi_profile": "openmpi", "performance_hints": {"io": "heavy", "nodes": 2}}"#).json();
    assert_eq!((v["decision"].as_str(), v["estimate"].as_str()), (Some("accept"), Some("0.16")));
    // Bad metadata: one clear line, as at submit.
    let r = quote(r#"{"research_domain": "a;rm"}"#);
    assert_eq!((r.status, error_code(&r).as_str()), (422, "invalid"), "{}", r.body);
    assert_eq!(
        r.json()["error"]["message"],
        "asbb: bad job metadata 'research_domain=a;rm' in job_metadata: values are 1-64 letters, digits or _ - . : /"
    );
    let r = quote(r#"{"colour": "blue"}"#);
    assert_eq!((r.status, error_code(&r).as_str()), (400, "invalid_body"), "{}", r.body);

    // cost_data keeps keys asbb does not read, as sent; actual_cost stays required.
    let body = r#"{"job_id": 101, "cluster": "c1",
                   "cost_data": {"actual_cost": "1.00", "egress_gb": 12.5, "billing": {"account": "123456789012"}}}"#;
    let r = w.call("POST", "/api/v1/integration/cost-update", Some(INTEGRATION), Some(body));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = w.call(
        "POST",
        "/api/v1/integration/cost-update",
        Some(INTEGRATION),
        Some(r#"{"job_id": 101, "cost_data": {"egress_gb": 1}}"#),
    );
    assert_eq!((r.status, error_code(&r).as_str()), (400, "invalid_body"), "{}", r.body);
    let ctx = w.call("GET", "/api/v1/integration/budget-context/101?cluster=c1", Some(READ), None).json();
    assert_eq!(ctx["cost_updates"][0]["cost_data"]["egress_gb"], 12.5);
    assert_eq!(ctx["cost_updates"][0]["cost_data"]["billing"]["account"], "123456789012");
    // The job's own metadata (none was given: every field empty) and its account's grant.
    assert_eq!(ctx["metadata"]["grant_number"], serde_json::Value::Null);
    assert_eq!(ctx["grant"]["number"], "NSF-1");

    // Feedback may be partial; without both costs it is no learning sample.
    let r = w.call(
        "POST",
        "/api/v1/integration/performance-feedback",
        Some(INTEGRATION),
        Some(r#"{"job_id": 104, "actual_duration": 1800, "performance_rating": "good"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.json()["applied"].as_bool(), r.json()["learning_sample"].as_bool()), (Some(true), Some(false)));
    let ctx = w.call("GET", "/api/v1/integration/budget-context/104", Some(READ), None).json();
    assert_eq!(ctx["feedback"]["actual_duration"], 1800);
    assert_eq!(ctx["feedback"]["estimated_cost"], serde_json::Value::Null);
    w.verify_clean();
}

#[test]
fn usage_report_is_served_to_readers() {
    let w = world();
    let day = |t: i64| chrono::DateTime::from_timestamp(t, 0).unwrap().format("%Y-%m-%d").to_string();
    let (from, to) = (day(now() - 40 * DAY), day(now() + DAY));
    let path = format!("/api/v1/reports/usage?from={from}&to={to}&by=account,partition");
    let r = w.call("GET", &path, Some(READ), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["by"], serde_json::json!(["account", "partition"]));
    let rows = v["rows"].as_array().unwrap();
    assert!(rows.iter().any(|row| row["account"] == "chem" && row["partition"] == "debug"), "{v}");
    // The journal's net cost, all of it inside the window.
    let net: i64 = rusqlite::Connection::open(w.ledger())
        .unwrap()
        .query_row(
            "SELECT sum(CASE kind WHEN 'refund' THEN -amount_micros ELSE amount_micros END) FROM journal
             WHERE kind IN ('charge', 'refund', 'adjustment')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(v["total"]["cost"], Money::from_micros(net).to_exact_string());
    let csv = w.call("GET", &format!("{path}&format=csv"), Some(READ), None);
    assert_eq!(csv.status, 200);
    assert!(csv.body.starts_with("account,partition,cost,charges,refunds,adjustments,jobs,cpu_hours,gpu_hours\n"));
    let r = w.call("GET", &format!("/api/v1/reports/usage?from={from}&to={to}&by=colour"), Some(READ), None);
    assert_eq!((r.status, error_code(&r).as_str()), (400, "invalid_query"));
    assert_eq!(
        r.json()["error"]["message"],
        "by: cannot group by 'colour'; use account, user, project, domain, grant, partition, qos or cluster"
    );
    assert_eq!(w.call("GET", &path, None, None).status, 401);
}

#[test]
fn grants_are_listed_and_shown_to_readers() {
    let w = world();
    let r = w.call("GET", "/api/v1/grants", Some(READ), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!((v[0]["number"].as_str(), v[0]["account"].as_str()), (Some("NSF-1"), Some("chem")));
    let v = w.call("GET", "/api/v1/grants/NSF-1", Some(READ), None).json();
    assert_eq!((v["award"].as_str(), v["principal_investigator"].as_str()), (Some("500.00"), Some("Ada")));
    let r = w.call("GET", "/api/v1/grants/NSF-2", Some(READ), None);
    assert_eq!((r.status, error_code(&r).as_str()), (404, "unknown_grant"));
    assert_eq!(r.json()["error"]["message"], "unknown grant 'NSF-2'");
    assert_eq!(w.call("GET", "/api/v1/grants", None, None).status, 401);
}

#[test]
fn budget_context_shows_the_grant_and_metadata_the_job_was_priced_with() {
    let w = world();
    let mut b = w.budget();
    let meta = asbb::core::pricing::metadata::JobMetadata {
        grant_number: Some("NSF-1".into()),
        research_domain: Some("chemistry".into()),
        project_code: Some("p7".into()),
        ..Default::default()
    };
    let r = req("chem", "debug", 2, 60, Some(301));
    assert!(matches!(b.submit(&r, &meta, now()).unwrap(), Decision::Accept { .. }));
    drop(b);
    let ctx = w.call("GET", "/api/v1/integration/budget-context/301", Some(READ), None).json();
    assert_eq!(ctx["metadata"]["grant_number"], "NSF-1");
    assert_eq!(ctx["metadata"]["research_domain"], "chemistry");
    assert_eq!(ctx["metadata"]["project_code"], "p7");
    assert_eq!(ctx["grant"]["number"], "NSF-1");
    w.verify_clean();
}
