// SPDX-License-Identifier: GPL-2.0-or-later
//! `asbb-admin reconcile` end to end through the command line, with SLURM's client
//! commands replaced by scripts that print captured output (so it runs anywhere,
//! without root or daemons): which source is used, the fallbacks, sacct, the text
//! and JSON output, idempotence, and that nothing is written when SLURM cannot answer.

use asbb::core::config::Config;
use asbb::core::decisions::{Budget, Decision, FOREVER};
use asbb::core::ledger::{Ledger, OpenMode};
use asbb::core::money::Money;
use asbb::core::pricing::job::{JobRequest, Resources};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

const NOW: i64 = 1_780_000_000;

const FAKE_SCONTROL: &str = r#"#!/bin/sh
case "$*" in
  "show config") printf 'ClusterName             = fake\nAccountingStorageType   = %s\n' "$FAKE_STORAGE" ;;
  *"show job"*)
    echo "$SLURM_TIME_FORMAT $TZ" > "$FAKE_DIR/scontrol.env"
    [ -f "$FAKE_DIR/scontrol.txt" ] || { echo "slurm_load_jobs error: Unable to contact slurm controller (connect failure)" >&2; exit 1; }
    cat "$FAKE_DIR/scontrol.txt" ;;
  *) exit 1 ;;
esac
"#;

const FAKE_SQUEUE: &str = r#"#!/bin/sh
[ -f "$FAKE_DIR/squeue.json" ] || { echo "squeue: error: Invalid user for SlurmUser slurm, ignored" >&2; exit 1; }
cat "$FAKE_DIR/squeue.json"
"#;

const FAKE_SACCT: &str = r#"#!/bin/sh
echo "$*" > "$FAKE_DIR/sacct.args"
[ -f "$FAKE_DIR/sacct.txt" ] || { echo "sacct: error: Problem talking to the database: Connection refused" >&2; exit 1; }
cat "$FAKE_DIR/sacct.txt"
"#;

struct Site {
    dir: tempfile::TempDir,
    tokens: Vec<String>,
}

impl Site {
    /// A ledger with account chem and three holds (2 CPUs × 10 min = $1.20 each):
    /// tokens[0] and tokens[1] an hour old, tokens[2] a minute old.
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("bin");
        std::fs::create_dir(&fake).unwrap();
        for (name, text) in [("scontrol", FAKE_SCONTROL), ("squeue", FAKE_SQUEUE), ("sacct", FAKE_SACCT)] {
            let p = fake.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let ledger = dir.path().join("ledger.db");
        let toml = format!(
            "ledger = \"{}\"\n[policy]\nminimum_charge = \"0\"\n[partitions.debug.rates]\ncpu = 3.6\n",
            ledger.display()
        );
        std::fs::write(dir.path().join("asbb.toml"), &toml).unwrap();
        let config = Config::parse(&toml, "asbb.toml").unwrap();
        let mut b = Budget::with_ledger(config, Ledger::open(&ledger, OpenMode::CreateIfMissing, 1000).unwrap());
        b.create_account("chem", Money::from_dollars(100).unwrap(), 0, FOREVER, Money::ZERO, "t", NOW - 7200).unwrap();
        let mut tokens = Vec::new();
        for at in [NOW - 3600, NOW - 3600, NOW - 60] {
            let req = JobRequest {
                user: "alice".into(),
                uid: 1001,
                account: "chem".into(),
                partition: "debug".into(),
                resources: Resources { nodes: 1, cpus: 2, mem_mb: 0, gpus: BTreeMap::new() },
                time_limit_min: 10,
                array_tasks: 1,
                qos: None,
                job_id: None,
                job_name: None,
            };
            match b.check_and_hold(&req, at).unwrap() {
                Decision::Accept { token, .. } => tokens.push(token),
                other => panic!("{other:?}"),
            }
        }
        Site { dir, tokens }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap();
    }

    fn admin(&self, args: &[&str], storage: &str) -> Output {
        let path = format!("{}:{}", self.path("bin").display(), std::env::var("PATH").unwrap_or_default());
        Command::new(env!("CARGO_BIN_EXE_asbb-admin"))
            .args(args)
            .env("PATH", path)
            .env("ASBB_CONFIG", self.path("asbb.toml"))
            .env("ASBB_NOW", NOW.to_string())
            .env("FAKE_DIR", self.dir.path())
            .env("FAKE_STORAGE", storage)
            .env_remove("ASBB_LEDGER")
            .env_remove("SUDO_USER")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str], storage: &str) -> String {
        let out = self.admin(args, storage);
        assert!(
            out.status.success(),
            "asbb-admin {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn journal_len(&self) -> i64 {
        let c = rusqlite::Connection::open(self.path("ledger.db")).unwrap();
        c.query_row("SELECT count(*) FROM journal", [], |r| r.get(0)).unwrap()
    }
}

/// `squeue --json` as SLURM 22.05 prints it (trimmed): job 41 ended after 100 s on
/// 2 CPUs holding tokens[0]; job 42 runs with tokens[1]; job 43 ran unchecked.
fn squeue_json(t: &[String]) -> String {
    let job = |id: u32, state: &str, comment: &str, start: i64, end: i64, tres: &str| {
        format!(
            r#"{{"account": "chem", "admin_comment": "{comment}", "array_job_id": 0, "array_task_id": null,
            "array_task_string": "", "cpus": 2, "node_count": 1, "end_time": {end}, "job_id": {id},
            "job_state": "{state}", "partition": "debug", "restart_cnt": 0, "start_time": {start},
            "submit_time": {}, "tres_alloc_str": "{tres}", "user_id": 1001, "user_name": "alice"}}"#,
            NOW - 3600
        )
    };
    format!(
        r#"{{"meta": {{}}, "errors": [], "jobs": [{}, {}, {}]}}"#,
        job(41, "COMPLETED", &format!("asbb:hold={}", t[0]), NOW - 600, NOW - 500, "cpu=2,node=1,billing=2"),
        job(42, "RUNNING", &format!("asbb:hold={}", t[1]), NOW - 300, NOW + 300, "cpu=2,node=1,billing=2"),
        job(43, "COMPLETED", "", NOW - 600, NOW - 590, "cpu=2,node=1,billing=2"),
    )
}

const NOTE_OFF: &str = "note: accounting is off (AccountingStorageType=accounting_storage/none): slurmctld's records only; jobs it has forgotten (MinJobAge) are released, not charged\n";

#[test]
fn settles_from_squeue_json_and_a_second_run_does_nothing() {
    let s = Site::new();
    s.write("squeue.json", &squeue_json(&s.tokens));
    let t = &s.tokens;
    let dry = s.ok(&["reconcile", "--dry-run"], "accounting_storage/none");
    let journal = s.journal_len();
    let out = s.ok(&["reconcile"], "accounting_storage/none");
    let expected = format!(
        "{NOTE_OFF}\
         charged job 41 (COMPLETED, run 0, 100 s) to chem: $0.20; released $1.20 of hold {}\n\
         charged job 43 (COMPLETED, run 0, 10 s) to chem: $0.02; it had no hold (let in while the ledger was unavailable)\n\
         left $1.20 held for hold {} (account chem): submitted 60 s ago, within the 300 s grace period\n\
         reconcile: 0 released, 2 charged, 1 left (younger than 300 s), 1 still in SLURM\n",
        t[0], t[2]
    );
    assert_eq!(out, expected);
    let would: String = expected
        .lines()
        .map(|l| if l.starts_with("charged") { format!("would have {l}\n") } else { format!("{l}\n") })
        .collect();
    assert_eq!(dry, would.replace("reconcile: ", "reconcile (dry run, nothing written): "));
    assert!(s.journal_len() > journal);
    // Idempotent.
    let again = s.ok(&["reconcile"], "accounting_storage/none");
    assert!(
        again.ends_with("reconcile: 0 released, 0 charged, 1 left (younger than 300 s), 1 still in SLURM\n"),
        "{again}"
    );
    // The young hold, once past the grace period and still without a job, is released.
    let out = s.ok(&["reconcile", "--grace", "30s", "--format", "json"], "accounting_storage/none");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["released"].as_u64(), v["charged"].as_u64(), v["alive"].as_u64()), (Some(1), Some(0), Some(1)));
    assert_eq!(v["actions"][0]["action"], "released");
    assert_eq!(v["actions"][0]["token"], t[2].as_str());
    assert_eq!(v["actions"][0]["amount_micros"], 1_200_000);
    let out = s.ok(&["verify"], "accounting_storage/none");
    assert!(out.contains("ok: every balance matches the journal"), "{out}");
}

#[test]
fn falls_back_to_scontrol_and_refuses_to_guess_when_slurm_cannot_answer() {
    let s = Site::new();
    let t = &s.tokens;
    // No squeue --json: scontrol's one-liners (times as unix seconds, UTC).
    s.write(
        "scontrol.txt",
        &format!(
            "JobId=41 JobName=wrap UserId=alice(1001) GroupId=alice(1001) Account=chem JobState=COMPLETED Restarts=0 SubmitTime={} StartTime={} EndTime={} Partition=debug NumNodes=1 NumCPUs=2 TRES=cpu=2,node=1,billing=2 WorkDir=/tmp AdminComment=asbb:hold={} StdOut=/dev/null\n",
            NOW - 3600,
            NOW - 600,
            NOW - 500,
            t[0]
        ),
    );
    let out = s.ok(&["reconcile", "--grace", "10m"], "accounting_storage/none");
    assert!(out.starts_with("note: `squeue --json --all --states=all` failed (exit status: 1): squeue: error: Invalid user for SlurmUser slurm, ignored; read `scontrol -o show job` instead\n"), "{out}");
    assert!(
        out.contains(&format!(
            "charged job 41 (COMPLETED, run 0, 100 s) to chem: $0.20; released $1.20 of hold {}",
            t[0]
        )),
        "{out}"
    );
    assert!(out.contains(&format!("released $1.20 held for hold {} (account chem): SLURM has no job", t[1])), "{out}");
    assert!(
        out.ends_with("reconcile: 1 released, 1 charged, 1 left (younger than 600 s), 0 still in SLURM\n"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(s.path("scontrol.env")).unwrap(), "%s UTC\n");

    // Nothing answers: an error, and nothing written.
    std::fs::remove_file(s.path("scontrol.txt")).unwrap();
    let journal = s.journal_len();
    let out = s.admin(&["reconcile", "--grace", "0"], "accounting_storage/none");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reconcile: cannot tell which jobs SLURM has, so nothing was changed"), "{err}");
    assert_eq!(s.journal_len(), journal);
    // Asked for JSON only, it does not fall back.
    let out = s.admin(&["reconcile", "--source", "json"], "accounting_storage/none");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn asks_sacct_about_jobs_slurmctld_forgot_and_says_when_it_fails() {
    let s = Site::new();
    let t = &s.tokens;
    s.write("squeue.json", r#"{"meta": {}, "errors": [], "jobs": []}"#);
    // Job 51 (tokens[1]) ended long ago and slurmctld purged it; accounting has it.
    s.write(
        "sacct.txt",
        &format!(
            "51|51|COMPLETED|{}|{}|{}|billing=2,cpu=2,mem=1000M,node=1|chem|debug|alice|1001|2|1|asbb:hold={}\n",
            NOW - 3600,
            NOW - 3000,
            NOW - 2950,
            t[1]
        ),
    );
    let out = s.ok(&["reconcile", "--grace", "0"], "accounting_storage/slurmdbd");
    assert!(out.contains("note: sacct: 1 jobs since "), "{out}");
    assert!(
        out.contains(&format!(
            "charged job 51 (COMPLETED, run 0, 50 s) to chem: $0.10; released $1.20 of hold {}",
            t[1]
        )),
        "{out}"
    );
    assert!(out.ends_with("reconcile: 2 released, 1 charged, 0 left (younger than 0 s), 0 still in SLURM\n"), "{out}");
    let args = std::fs::read_to_string(s.path("sacct.args")).unwrap();
    assert!(args.starts_with("-a -X -n -P -S ") && args.contains("--format=JobIDRaw,JobID,State,"), "{args}");
    // A second run: the run is known by its job id and submit time (sacct has no restart count).
    let again = s.ok(&["reconcile", "--grace", "0"], "accounting_storage/slurmdbd");
    assert!(
        again.ends_with("reconcile: 0 released, 0 charged, 0 left (younger than 0 s), 0 still in SLURM\n"),
        "{again}"
    );

    // sacct failing is said, and slurmctld's records are used alone.
    std::fs::remove_file(s.path("sacct.txt")).unwrap();
    let out = s.ok(&["reconcile", "--grace", "0"], "accounting_storage/slurmdbd");
    assert!(out.contains("note: sacct failed (`sacct -a -X -n -P -S "), "{out}");
    assert!(
        out.contains("Problem talking to the database: Connection refused); using slurmctld's records only"),
        "{out}"
    );
}
