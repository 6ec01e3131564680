// SPDX-License-Identifier: GPL-2.0-or-later
//! Alerts that reach people: `[alerts]`, `asbb-admin alerts run|list`, and `serve`.
//!
//! A ledger seeded through the core with a fixed clock: account `chem` is funded only
//! by grant NSF-1 ($200, PI ada@uni.example), which has spent $160 (80%) and at that
//! rate runs out before its end; job 6 has held $10 for 30 hours and job 7 has
//! awaited approval for 2 hours. `asbb-admin alerts run` (with `ASBB_NOW`) posts to a
//! webhook receiver in this test and mails through a fake sendmail that keeps each
//! message in a file. Each crossing is raised once, a failed webhook is retried after
//! `retry_minutes` and given up after `max_attempts`, a condition that stops holding
//! is cleared, and a new crossing after that is raised again.

use asbb::core::config::Config;
use asbb::core::decisions::{Budget, Decision, DAY_S, FOREVER};
use asbb::core::grants::{NewGrant, PeriodSplit};
use asbb::core::ledger::OpenMode;
use asbb::core::money::Money;
use asbb::core::pricing::job::{EndState, JobCompletion, JobRequest, Resources};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// 2026-06-01T12:00:00Z: every run is made at T or minutes after it.
const T: i64 = 1_780_315_200;
const MIN: i64 = 60;
const HOUR: i64 = 3_600;

/// A webhook receiver: keeps each body, answers with `status`.
struct Hook {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
    status: Arc<AtomicU16>,
}

fn hook() -> Hook {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/asbb", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let status = Arc::new(AtomicU16::new(200));
    let (b, s) = (bodies.clone(), status.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0usize;
            let mut first = String::new();
            if r.read_line(&mut first).is_err() {
                continue;
            }
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            assert!(first.starts_with("POST /hooks/asbb "), "{first}");
            b.lock().unwrap().push(String::from_utf8(body).unwrap());
            let code = s.load(Ordering::SeqCst);
            let text = if code == 200 { "ok" } else { "busy" };
            let _ =
                write!(conn, "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len());
        }
    });
    Hook { url, bodies, status }
}

struct World {
    dir: tempfile::TempDir,
    hook: Hook,
}

impl World {
    fn ledger(&self) -> PathBuf {
        self.dir.path().join("ledger.db")
    }

    fn config_file(&self) -> PathBuf {
        self.dir.path().join("asbb.toml")
    }

    fn budget(&self) -> Budget {
        Budget::open(Config::load(&self.config_file()).unwrap(), OpenMode::MustExist).unwrap()
    }

    fn admin_at(&self, now: i64, args: &[&str]) -> (String, String, i32) {
        let out = Command::new(env!("CARGO_BIN_EXE_asbb-admin"))
            .args(args)
            .env("ASBB_CONFIG", self.config_file())
            .env("ASBB_NOW", now.to_string())
            .output()
            .unwrap();
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
            out.status.code().unwrap_or(-1),
        )
    }

    /// The messages the fake sendmail kept, oldest first.
    fn mails(&self) -> Vec<String> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("mail"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
    }

    fn hook_titles(&self) -> Vec<String> {
        self.hook
            .bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| {
                serde_json::from_str::<serde_json::Value>(b).unwrap()["asbb"]["title"].as_str().unwrap().to_string()
            })
            .collect()
    }
}

fn req(cpus: u32, minutes: u32, job_id: u32) -> JobRequest {
    JobRequest {
        user: "alice".into(),
        uid: 1234,
        account: "chem".into(),
        partition: "debug".into(),
        resources: Resources { nodes: 1, cpus, mem_mb: 0, gpus: Default::default() },
        time_limit_min: minutes,
        array_tasks: 1,
        qos: None,
        job_id: Some(job_id),
        job_name: None,
    }
}

/// Submits job `job_id` at `at`, and runs it for its whole time limit when `run`.
fn job(b: &mut Budget, r: &JobRequest, at: i64, run: bool) -> Decision {
    let d = b.check_and_hold(r, at).unwrap();
    if let (true, Decision::Accept { token, .. }) = (run, &d) {
        let ran_s = r.time_limit_min as i64 * 60;
        let c = JobCompletion {
            cluster: "c1".into(),
            job_id: r.job_id.unwrap(),
            hold_token: Some(token.clone()),
            user: r.user.clone(),
            account: r.account.clone(),
            partition: r.partition.clone(),
            state: EndState::Completed,
            start_time: at + 60,
            end_time: at + 60 + ran_s,
            allocated: Some(r.resources.clone()),
            task_count: 1,
            submit_time: at,
            run_index: 0,
            qos: None,
        };
        b.reconcile(&c, at + 60 + ran_s).unwrap();
    }
    d
}

fn world(extra: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let hook = hook();
    let mail_dir = dir.path().join("mail");
    std::fs::create_dir(&mail_dir).unwrap();
    // A sendmail that keeps each message (and its arguments) in a file named by the time
    // and its pid, and fails while mail/down exists.
    let sendmail = dir.path().join("sendmail");
    std::fs::write(
        &sendmail,
        format!(
            "#!/bin/sh\nd='{}'\nif [ -e \"$d/down\" ]; then echo 'sendmail: cannot connect to the relay' >&2; exit 75; fi\nn=\"$(date +%s%N)-$$\"\necho \"$*\" > \"$d/$n.args\"\ncat > \"$d/$n.eml\"\n",
            mail_dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&sendmail, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = format!(
        r#"
ledger = "{ledger}"
[policy]
approval_threshold = "45.00"
[partitions.debug.rates]
cpu = 1.00
[alerts]
spent_percent = [50, 75, 90, 100]
approval_wait_hours = 1
hold_age_hours = 24
webhook_url = "{url}"
mail_command = ["{sendmail}", "-t", "-i"]
mail_from = "asbb@cluster.example"
mail_to = ["hpc@centre.example"]
retry_minutes = 5
max_attempts = 3
{extra}
"#,
        ledger = dir.path().join("ledger.db").display(),
        url = hook.url,
        sendmail = sendmail.display(),
    );
    std::fs::write(dir.path().join("asbb.toml"), config).unwrap();
    let w = World { dir, hook };
    let mut b = Budget::open(Config::load(&w.config_file()).unwrap(), OpenMode::CreateIfMissing).unwrap();
    let day = T - T.rem_euclid(DAY_S);
    b.create_account("chem", Money::ZERO, day - 30 * DAY_S, FOREVER, Money::ZERO, "test", T - 30 * DAY_S).unwrap();
    b.create_grant(
        &NewGrant {
            number: "NSF-1".into(),
            agency: "NSF".into(),
            pi: "Ada Lovelace".into(),
            pi_email: Some("ada@uni.example".into()),
            co_pis: vec![],
            program: None,
            federal_award_id: None,
            start: day - 10 * DAY_S,
            end: day + 355 * DAY_S,
            award: Money::from_dollars(200).unwrap(),
            indirect_rate_ppm: 0,
            account: Some("chem".into()),
            periods: PeriodSplit::Whole,
        },
        "test",
        T - 10 * DAY_S,
    )
    .unwrap();
    // $160 spent: four 4-CPU jobs of 10 hours at $1 a CPU-hour.
    for (i, days_ago) in [5, 4, 3, 2].into_iter().enumerate() {
        assert!(matches!(job(&mut b, &req(4, 600, i as u32 + 1), T - days_ago * DAY_S, true), Decision::Accept { .. }));
    }
    // Job 6 holds $10 from 30 hours ago; job 7 ($50, above the $45 threshold) awaits approval.
    assert!(matches!(job(&mut b, &req(1, 600, 6), T - 30 * HOUR, false), Decision::Accept { .. }));
    assert!(matches!(job(&mut b, &req(5, 600, 7), T - 2 * HOUR, false), Decision::Hold { .. }));
    w
}

const RAISED: &[&str] = &[
    "grant NSF-1 has spent 50% of its award",
    "grant NSF-1 has spent 75% of its award",
    "grant NSF-1 runs out before its end",
    "account chem has spent 50% of its budget",
    "account chem has spent 75% of its budget",
    "account chem runs out before its end",
    "job 7 awaits approval",
    "job 6 has held $10.00 for over 24 hours",
];

#[test]
fn each_crossing_is_sent_once_and_a_failed_webhook_is_retried_then_given_up() {
    let w = world("");
    w.hook.status.store(500, Ordering::SeqCst);

    // Run 1: seven crossings. The lower threshold of a subject crossed in the same run
    // is recorded but not sent; mail goes out, the webhook fails.
    let (out, err, code) = w.admin_at(T, &["alerts", "run"]);
    let sent: Vec<&str> = RAISED.iter().copied().filter(|t| !t.contains("50%")).collect();
    let mut expected = "alerts: 8 raised, 0 cleared, 6 deliveries sent, 6 failed\n".to_string();
    for t in RAISED {
        expected.push_str(&format!("raised: {t}\n"));
    }
    for t in &sent {
        expected.push_str(&format!("failed: {t} (webhook: the webhook answered 500: busy; will retry)\n"));
    }
    assert_eq!(
        (out.as_str(), err.as_str(), code),
        (expected.as_str(), "asbb-admin: error: alerts run: 6 deliveries failed\n", 1)
    );
    assert_eq!(w.hook_titles(), sent);
    let mails = w.mails();
    assert_eq!(mails.len(), 6);
    assert_eq!(
        mails[0],
        "From: asbb@cluster.example\nTo: hpc@centre.example, ada@uni.example\nSubject: [asbb] grant NSF-1 has spent 75% of its award\nDate: Mon, 1 Jun 2026 12:00:00 +0000\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\nAuto-Submitted: auto-generated\n\nGrant NSF-1 has spent $160.00 of its $200.00 award (80.00%) as of 2026-06-01 12:00:00 UTC; $40.00 remains.\nAt the current burn rate it runs out on 2026-06-04; it ends on 2027-05-21.\n"
    );
    let mut args: Vec<PathBuf> = std::fs::read_dir(w.dir.path().join("mail"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "args"))
        .collect();
    args.sort();
    assert_eq!(std::fs::read_to_string(&args[0]).unwrap(), "-t -i\n");
    let subjects: Vec<String> =
        mails.iter().map(|m| m.lines().find(|l| l.starts_with("Subject: ")).unwrap().to_string()).collect();
    assert_eq!(subjects, sent.iter().map(|t| format!("Subject: [asbb] {t}")).collect::<Vec<_>>());
    assert!(mails[4].contains(
        "Job 7 (alice, account chem, partition debug), estimated at $50.00, has awaited approval since 2026-06-01 10:00:00 UTC; approve it with `asbb-admin job approve 7` or deny it with `asbb-admin job deny 7`.\n"
    ));
    // The webhook body: `text` for chat tools, `asbb` for programs.
    let first: serde_json::Value = serde_json::from_str(&w.hook.bodies.lock().unwrap()[0]).unwrap();
    assert_eq!(
        first["text"],
        "[asbb] grant NSF-1 has spent 75% of its award\nGrant NSF-1 has spent $160.00 of its $200.00 award (80.00%) as of 2026-06-01 12:00:00 UTC; $40.00 remains.\nAt the current burn rate it runs out on 2026-06-04; it ends on 2027-05-21."
    );
    assert_eq!(
        (first["asbb"]["kind"].as_str(), first["asbb"]["subject"].as_str()),
        (Some("spent"), Some("grant NSF-1"))
    );

    // Run 2, a minute later: nothing new, and the failed webhooks wait out retry_minutes.
    let (out, _, code) = w.admin_at(T + MIN, &["alerts", "run"]);
    assert_eq!((out.as_str(), code), ("alerts: 0 raised, 0 cleared, 0 deliveries sent, 0 failed\n", 0));
    assert_eq!((w.hook_titles().len(), w.mails().len()), (6, 6));

    // Run 3, after retry_minutes, the webhook is back: each is sent once, mail not again.
    w.hook.status.store(200, Ordering::SeqCst);
    let (out, _, code) = w.admin_at(T + 6 * MIN, &["alerts", "run"]);
    assert_eq!((out.as_str(), code), ("alerts: 0 raised, 0 cleared, 6 deliveries sent, 0 failed\n", 0));
    assert_eq!(w.hook_titles().len(), 12);
    assert_eq!(w.hook_titles()[6..], sent[..]);
    assert_eq!(w.mails().len(), 6);
    let (out, _, _) = w.admin_at(T + 7 * MIN, &["alerts", "run"]);
    assert_eq!(out, "alerts: 0 raised, 0 cleared, 0 deliveries sent, 0 failed\n");

    let (list, _, code) = w.admin_at(T + 7 * MIN, &["alerts", "list"]);
    assert_eq!(code, 0);
    assert_eq!(
        list.lines().take(6).collect::<Vec<_>>(),
        [
            "#8 2026-06-01 12:00:00 UTC  job 6 has held $10.00 for over 24 hours  (open)",
            "    mail to hpc@centre.example, ada@uni.example: sent 2026-06-01 12:00:00",
            "    webhook: sent 2026-06-01 12:06:00",
            "#7 2026-06-01 12:00:00 UTC  job 7 awaits approval  (open)",
            "    mail to hpc@centre.example, ada@uni.example: sent 2026-06-01 12:00:00",
            "    webhook: sent 2026-06-01 12:06:00",
        ]
    );
    assert!(list.contains(
        "#1 2026-06-01 12:00:00 UTC  grant NSF-1 has spent 50% of its award  (open)\n    mail: not sent, a higher threshold crossed at the same time was\n    webhook: not sent, a higher threshold crossed at the same time was\n"
    ));

    // The approval is decided and a deposit halves the account's share spent: those
    // conditions no longer hold and their alerts are cleared.
    let mut b = w.budget();
    let token: String = rusqlite::Connection::open(w.ledger())
        .unwrap()
        .query_row("SELECT token FROM jobs WHERE job_id = 7", [], |r| r.get(0))
        .unwrap();
    b.deny(&token, Some(7), "not this month", "test", T + 8 * MIN).unwrap();
    b.deposit("chem", Money::from_dollars(200).unwrap(), T - DAY_S, FOREVER, None, None, "test", T + 8 * MIN).unwrap();
    drop(b);
    let (out, _, _) = w.admin_at(T + 9 * MIN, &["alerts", "run"]);
    assert_eq!(out, "alerts: 0 raised, 4 cleared, 0 deliveries sent, 0 failed\n");
    let (open, _, _) = w.admin_at(T + 9 * MIN, &["alerts", "list", "--open", "--format", "json"]);
    let open: serde_json::Value = serde_json::from_str(&open).unwrap();
    let titles: Vec<&str> = open["alerts"].as_array().unwrap().iter().map(|a| a["title"].as_str().unwrap()).collect();
    assert_eq!(titles, [RAISED[7], RAISED[2], RAISED[1], RAISED[0]]);

    // A new crossing (the grant passes 90%: $24 more is spent) is raised; with the
    // webhook down again it is tried max_attempts (3) times, retry_minutes apart, then given up.
    w.hook.status.store(500, Ordering::SeqCst);
    let mut b = w.budget();
    assert!(matches!(job(&mut b, &req(4, 360, 8), T + 10 * MIN, true), Decision::Accept { .. }));
    drop(b);
    let at = T + 7 * HOUR;
    let (out, _, code) = w.admin_at(at, &["alerts", "run"]);
    assert_eq!(
        (out.as_str(), code),
        (
            "alerts: 1 raised, 0 cleared, 1 delivery sent, 1 failed\nraised: grant NSF-1 has spent 90% of its award\nfailed: grant NSF-1 has spent 90% of its award (webhook: the webhook answered 500: busy; will retry)\n",
            1
        )
    );
    w.admin_at(at + 5 * MIN, &["alerts", "run"]);
    let (out, _, _) = w.admin_at(at + 10 * MIN, &["alerts", "run"]);
    assert_eq!(
        out,
        "alerts: 0 raised, 0 cleared, 0 deliveries sent, 1 failed\nfailed: grant NSF-1 has spent 90% of its award (webhook: the webhook answered 500: busy; given up)\n"
    );
    let (out, _, _) = w.admin_at(at + 60 * MIN, &["alerts", "run"]);
    assert_eq!(out, "alerts: 0 raised, 0 cleared, 0 deliveries sent, 0 failed\n");
    let (list, _, _) = w.admin_at(at + 60 * MIN, &["alerts", "list", "--limit", "1"]);
    assert_eq!(
        list,
        "#9 2026-06-01 19:00:00 UTC  grant NSF-1 has spent 90% of its award  (open)\n    mail to hpc@centre.example, ada@uni.example: sent 2026-06-01 19:00:00\n    webhook: given up after 3 attempts (the webhook answered 500: busy)\n"
    );
    assert_eq!(w.hook_titles().iter().filter(|t| t.contains("90%")).count(), 3);
    assert!(w.budget().verify().unwrap().is_clean());
}

#[test]
fn a_failed_mail_is_retried_and_a_crossing_after_clearing_is_raised_again() {
    let w = world("");
    std::fs::write(w.dir.path().join("mail/down"), "").unwrap();
    let (out, _, code) = w.admin_at(T, &["alerts", "run"]);
    assert_eq!(code, 1);
    assert!(out.contains("failed: grant NSF-1 has spent 75% of its award (mail: `"));
    assert!(out.contains("-t -i` failed (exit status: 75): sendmail: cannot connect to the relay; will retry)\n"));
    assert_eq!(w.mails().len(), 0);
    std::fs::remove_file(w.dir.path().join("mail/down")).unwrap();
    let (out, _, code) = w.admin_at(T + 5 * MIN, &["alerts", "run"]);
    assert_eq!((out.as_str(), code), ("alerts: 0 raised, 0 cleared, 6 deliveries sent, 0 failed\n", 0));
    assert_eq!(w.mails().len(), 6);

    // The account is topped up with open-ended money (below 50% spent, and no longer
    // ending with the grant: its three alerts clear), then spends up to 50% again: a
    // new crossing, raised and sent again.
    let mut b = w.budget();
    b.deposit("chem", Money::from_dollars(200).unwrap(), T - DAY_S, FOREVER, None, None, "test", T + 6 * MIN).unwrap();
    drop(b);
    let (out, _, _) = w.admin_at(T + 7 * MIN, &["alerts", "run"]);
    assert_eq!(out, "alerts: 0 raised, 3 cleared, 0 deliveries sent, 0 failed\n");
    let mut b = w.budget();
    // $40 more: the account has spent $200 of $400 (50%).
    assert!(matches!(job(&mut b, &req(4, 600, 9), T + 8 * MIN, true), Decision::Accept { .. }));
    drop(b);
    let (out, _, _) = w.admin_at(T + 11 * HOUR, &["alerts", "run"]);
    // The grant, charged first, passes 90% and 100% at once: only 100% is sent.
    assert_eq!(
        out,
        "alerts: 3 raised, 0 cleared, 4 deliveries sent, 0 failed\nraised: grant NSF-1 has spent 90% of its award\nraised: grant NSF-1 has spent 100% of its award\nraised: account chem has spent 50% of its budget\n"
    );
    let keys: Vec<String> = {
        let conn = rusqlite::Connection::open(w.ledger()).unwrap();
        let mut s = conn
            .prepare("SELECT alert_key FROM alerts WHERE alert_key LIKE 'account:chem:spent:50' ORDER BY id")
            .unwrap();
        s.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(keys.len(), 2, "the first crossing, cleared, and the second");
}

#[test]
fn runs_at_the_same_time_send_each_crossing_once() {
    let w = world("");
    let runs: Vec<std::process::Child> = (0..4)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_asbb-admin"))
                .args(["alerts", "run"])
                .env("ASBB_CONFIG", w.config_file())
                .env("ASBB_NOW", T.to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut r in runs {
        assert!(r.wait().unwrap().success());
    }
    let mut sent = w.hook_titles();
    sent.sort();
    let mut expected: Vec<String> = RAISED.iter().filter(|t| !t.contains("50%")).map(|t| t.to_string()).collect();
    expected.sort();
    assert_eq!(sent, expected);
    assert_eq!(w.mails().len(), 6);
    let rows: i64 = rusqlite::Connection::open(w.ledger())
        .unwrap()
        .query_row("SELECT count(*) FROM alerts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 8);
}

#[test]
fn serve_runs_the_alerts_at_start() {
    let w = world("interval_minutes = 60");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_asbb-admin"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("ASBB_CONFIG", w.config_file())
        .env("ASBB_NOW", T.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while w.hook_titles().len() < 6 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    terminate(serve.id());
    let status = serve.wait().unwrap();
    let mut err = String::new();
    serve.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{err}");
    assert_eq!(w.hook_titles().len(), 6, "{err}");
    assert!(err.contains("asbb-admin serve: alerts: 8 raised, 0 cleared, 12 deliveries sent, 0 failed\n"), "{err}");
    assert_eq!(w.mails().len(), 6);
}

/// SIGTERM, through kill(1).
fn terminate(pid: u32) {
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
}

#[test]
fn the_pi_address_is_checked_shown_and_mailed() {
    let w = world("");
    let (_, err, code) = w.admin_at(T, &["grant", "update", "NSF-1", "--pi-email", "ada at uni"]);
    assert_eq!(
        (err.as_str(), code),
        ("asbb-admin: error: PI mail address 'ada at uni' is not a mail address (local@domain)\n", 2)
    );
    let (out, _, code) = w.admin_at(T, &["grant", "update", "NSF-1", "--pi-email", "ada@lab.example"]);
    assert_eq!(code, 0);
    assert!(out.contains("\nPI:                Ada Lovelace <ada@lab.example>\n"), "{out}");
    let (out, _, _) = w.admin_at(T, &["grant", "show", "NSF-1", "--format", "json"]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["pi_email"], "ada@lab.example");
    w.admin_at(T, &["alerts", "run"]);
    assert!(w.mails()[0].contains("\nTo: hpc@centre.example, ada@lab.example\n"));
    // Without it, alerts reach mail_to only.
    let (out, _, _) = w.admin_at(T, &["grant", "update", "NSF-1", "--no-pi-email"]);
    assert!(out.contains("\nPI:                Ada Lovelace\n"), "{out}");
    let (_, err, code) = w.admin_at(T, &["grant", "update", "NSF-1"]);
    assert_eq!(code, 2, "{err}");
    let mut b = w.budget();
    assert!(matches!(job(&mut b, &req(4, 360, 8), T + MIN, true), Decision::Accept { .. }));
    drop(b);
    w.admin_at(T + 7 * HOUR, &["alerts", "run"]);
    let mails = w.mails();
    let new: Vec<&String> = mails.iter().filter(|m| m.contains("19:00:00 +0000")).collect();
    assert_eq!(new.len(), 2, "the grant's and the account's 90%");
    assert!(
        new[0].contains("\nTo: hpc@centre.example\nSubject: [asbb] grant NSF-1 has spent 90% of its award\n"),
        "{new:#?}"
    );
}

#[test]
fn a_redirect_is_not_delivery_a_removed_channel_is_given_up_and_lower_thresholds_stay_quiet() {
    let w = world("");
    // A 3xx delivered nothing (redirects are not followed).
    w.hook.status.store(302, Ordering::SeqCst);
    let (out, _, code) = w.admin_at(T, &["alerts", "run"]);
    assert_eq!(code, 1);
    assert!(out.contains(
        "failed: grant NSF-1 has spent 75% of its award (webhook: the webhook answered 302 (not followed: give the final URL); will retry)\n"
    ), "{out}");
    // The webhook is taken out of asbb.toml: its pending deliveries are given up, with why.
    let toml = std::fs::read_to_string(w.config_file()).unwrap();
    let without: String = toml.lines().filter(|l| !l.starts_with("webhook_url")).map(|l| format!("{l}\n")).collect();
    std::fs::write(w.config_file(), &without).unwrap();
    let (out, _, code) = w.admin_at(T + 6 * MIN, &["alerts", "run"]);
    assert_eq!((out.as_str(), code), ("alerts: 0 raised, 0 cleared, 0 deliveries sent, 0 failed\n", 0));
    let (list, _, _) = w.admin_at(T + 6 * MIN, &["alerts", "list", "--limit", "1"]);
    assert!(
        list.contains("    webhook: given up after 1 attempt (webhook_url is no longer set in [alerts])\n"),
        "{list}"
    );
    // A threshold added under one already crossed and open is recorded, not sent.
    std::fs::write(
        w.config_file(),
        without.replace("spent_percent = [50, 75, 90, 100]", "spent_percent = [50, 60, 75, 90, 100]"),
    )
    .unwrap();
    let (out, _, _) = w.admin_at(T + 7 * MIN, &["alerts", "run"]);
    assert_eq!(
        out,
        "alerts: 2 raised, 0 cleared, 0 deliveries sent, 0 failed\nraised: grant NSF-1 has spent 60% of its award\nraised: account chem has spent 60% of its budget\n"
    );
    // Open-ended money: the account no longer ends with the grant, so its exhaustion
    // alert clears; 160 of 210 is 76%, still over 75.
    let mut b = w.budget();
    b.deposit("chem", Money::from_dollars(10).unwrap(), T - DAY_S, FOREVER, None, None, "test", T + 8 * MIN).unwrap();
    drop(b);
    let (out, _, _) = w.admin_at(T + 9 * MIN, &["alerts", "run"]);
    assert_eq!(out, "alerts: 0 raised, 1 cleared, 0 deliveries sent, 0 failed\n");
    // 160 of 220 is 72.7%: under 75, but not by 5 points, so its alert stays open (a
    // small refund or top-up near a threshold does not clear and raise it again).
    let mut b = w.budget();
    b.deposit("chem", Money::from_dollars(10).unwrap(), T - DAY_S, FOREVER, None, None, "test", T + 10 * MIN).unwrap();
    drop(b);
    let (out, _, _) = w.admin_at(T + 11 * MIN, &["alerts", "run"]);
    assert_eq!(out, "alerts: 0 raised, 0 cleared, 0 deliveries sent, 0 failed\n");
    let open: serde_json::Value =
        serde_json::from_str(&w.admin_at(T + 11 * MIN, &["alerts", "list", "--open", "--format", "json"]).0).unwrap();
    let keys: Vec<&str> = open["alerts"].as_array().unwrap().iter().map(|a| a["key"].as_str().unwrap()).collect();
    assert!(keys.contains(&"account:chem:spent:75"), "{keys:?}");
    assert!(!keys.contains(&"account:chem:exhaustion"), "open-ended money now: cleared");
}

#[test]
fn bad_alert_settings_are_refused_with_the_key() {
    let parse =
        |alerts: &str| Config::parse(&format!("[alerts]\n{alerts}\n"), "a.toml").map(|_| ()).map_err(|e| e.to_string());
    assert_eq!(
        parse("spent_percent = [50]"),
        Err("a.toml: alerts: give webhook_url or mail_command (or both): where alerts are sent".into())
    );
    assert_eq!(
        parse("webhook_url = \"ftp://x\""),
        Err("a.toml: alerts.webhook_url: 'ftp://x' is not an http:// or https:// URL".into())
    );
    assert_eq!(
        parse("mail_command = [\"sendmail\"]"),
        Err("a.toml: alerts.mail_command: give the program's absolute path first, then its arguments, e.g. [\"/usr/sbin/sendmail\", \"-t\", \"-i\"]".into())
    );
    assert_eq!(
        parse("mail_command = [\"/usr/sbin/sendmail\"]\nmail_to = [\"ops@x.org\\nBcc: evil@y.org\"]"),
        Err("a.toml: alerts.mail_to: 'ops@x.orgBcc: evil@y.org' is not a mail address (local@domain)".into())
    );
    assert_eq!(
        parse("webhook_url = \"http://h/\"\nspent_percent = [0]"),
        Err("a.toml: alerts.spent_percent: 0 must be from 1 to 1000".into())
    );
    assert_eq!(
        parse("webhook_url = \"http://h/\"\nhold_age_hours = 0"),
        Err("a.toml: alerts.hold_age_hours: 0 must be from 1 to 8784".into())
    );
    assert_eq!(
        parse("webhook_url = \"http://h/\"\nmax_attempts = 0"),
        Err("a.toml: alerts.max_attempts: 0 must be from 1 to 1000".into())
    );
    assert_eq!(
        parse("webhook_url = \"http://h/\"\nretry_minutes = 0"),
        Err("a.toml: alerts.retry_minutes: 0 must be from 1 to 1440".into())
    );
    assert_eq!(
        parse("mail_command = [\"/usr/sbin/sendmail\"]\nmail_pi = false"),
        Err("a.toml: alerts.mail_to: empty, and mail_pi = false: mail would reach no one".into())
    );
    assert!(parse("webhook_url = \"https://hooks.slack.com/services/T/B/X\"").is_ok());

    // No [alerts]: the command says what to set.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("asbb.toml");
    std::fs::write(&cfg, format!("ledger = \"{}\"\n", dir.path().join("l.db").display())).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_asbb-admin"))
        .args(["alerts", "run"])
        .env("ASBB_CONFIG", &cfg)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "asbb-admin: error: {}: no [alerts] section: set webhook_url and/or mail_command there to send alerts\n",
            cfg.display()
        )
    );
}
