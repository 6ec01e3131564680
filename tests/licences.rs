// SPDX-License-Identifier: GPL-2.0-or-later
//! Dependency licences: asbb is GPL-2.0-or-later, so every package it
//! depends on (normal, build and dev, every platform, as `cargo metadata` lists them)
//! must carry a licence that can be distributed together with GPL-2.0-or-later code.
//! Each package's `license` SPDX expression is evaluated against `ALLOWED`; a package
//! with no `license` field (only `license_file`) or an expression the list cannot
//! satisfy fails the test, which names every offender. Run with `--nocapture` to see
//! one line per dependency.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Licences (or `licence WITH exception` pairs) a dependency may be under.
///
/// Permissive licences: their code may be combined with GPL-2.0-or-later code and the
/// whole distributed under the GPL.
///
/// Apache-2.0 is compatible with GPL-3.0 (not with GPL-2.0-only); GPL-2.0-or-later
/// allows distribution under GPL-3.0, so Apache-2.0 code may be combined with asbb (a
/// binary that links Apache-2.0-only code is then passed on under GPL-3.0 terms). Most
/// Rust crates offer `MIT OR Apache-2.0`, and MIT satisfies them either way.
///
/// Refused: GPL-3.0-only, LGPL-3.0 and AGPL (and anything not listed). Combining
/// GPL-2.0-or-later code with them is allowed, but the result could only be passed on
/// under (A)GPL-3.0 terms; asbb's plugins are to stay distributable under GPL-2.0, as
/// SLURM and its own plugins are. GPL-2.0-only is refused too: it would drop the
/// "or later".
const ALLOWED: &[&str] = &[
    // permissive
    "MIT",
    "MIT-0",
    "Apache-2.0",
    "Apache-2.0 WITH LLVM-exception",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "ISC",
    "Zlib",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "Unlicense",
    "CC0-1.0",
    "0BSD",
    "BSL-1.0",
    // Mozilla's root certificates as data (webpki-roots, which ureq's TLS brings in; asbb
    // trusts the system's CA store instead). A permissive data licence: the data may be
    // used and shared with this text beside it, and what is built with it is unrestricted.
    "CDLA-Permissive-2.0",
    // copyleft that allows GPL-2.0-or-later terms for the combination
    "GPL-2.0-or-later",
    "GPL-2.0+",
    "LGPL-2.0-or-later",
    "LGPL-2.0+",
    "LGPL-2.1-or-later",
    "LGPL-2.1+",
];

// ----- the SPDX expression evaluator -----

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Id(String),
    And,
    Or,
    With,
    Open,
    Close,
}

fn tokenize(expr: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = expr.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                tokens.push(Token::Open);
            }
            ')' => {
                chars.next();
                tokens.push(Token::Close);
            }
            // The legacy separator, meaning OR: `MIT/Apache-2.0`.
            '/' => {
                chars.next();
                tokens.push(Token::Or);
            }
            c if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '+' | ':') => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '+' | ':') {
                        word.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(match word.as_str() {
                    "AND" | "and" => Token::And,
                    "OR" | "or" => Token::Or,
                    "WITH" | "with" => Token::With,
                    _ => Token::Id(word),
                });
            }
            c => return Err(format!("unexpected character {c:?}")),
        }
    }
    Ok(tokens)
}

/// Recursive descent over SPDX's grammar, evaluating as it goes:
/// `or := and (OR and)*`, `and := with (AND with)*`, `with := primary (WITH id)?`,
/// `primary := id | ( or )`. A leaf is true iff it is in `allowed`.
struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    allowed: &'a [&'a str],
}

impl Parser<'_> {
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn or(&mut self) -> Result<bool, String> {
        let mut value = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            value |= self.and()?;
        }
        Ok(value)
    }

    fn and(&mut self) -> Result<bool, String> {
        let mut value = self.with()?;
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            value &= self.with()?;
        }
        Ok(value)
    }

    fn with(&mut self) -> Result<bool, String> {
        match self.next() {
            Some(Token::Open) => {
                let value = self.or()?;
                match self.next() {
                    Some(Token::Close) => Ok(value),
                    other => Err(format!("expected `)`, found {other:?}")),
                }
            }
            Some(Token::Id(id)) => {
                if self.peek() == Some(&Token::With) {
                    self.pos += 1;
                    match self.next() {
                        Some(Token::Id(exception)) => {
                            Ok(self.allowed.contains(&format!("{id} WITH {exception}").as_str()))
                        }
                        other => Err(format!("expected an exception after WITH, found {other:?}")),
                    }
                } else {
                    Ok(self.allowed.contains(&id.as_str()))
                }
            }
            other => Err(format!("expected a licence or `(`, found {other:?}")),
        }
    }
}

/// Whether `expr` can be satisfied with licences from `allowed`; Err if it does not parse.
fn acceptable(expr: &str, allowed: &[&str]) -> Result<bool, String> {
    let tokens = tokenize(expr)?;
    if tokens.is_empty() {
        return Err("empty expression".into());
    }
    let mut parser = Parser { tokens, pos: 0, allowed };
    let value = parser.or()?;
    match parser.peek() {
        None => Ok(value),
        Some(t) => Err(format!("unexpected {t:?}")),
    }
}

// ----- the check over `cargo metadata` -----

/// One line per package that is not a workspace member, and the lines of the offenders.
fn check(metadata: &Value) -> (Vec<String>, Vec<String>) {
    let members: Vec<&str> = metadata["workspace_members"]
        .as_array()
        .expect("metadata has workspace_members")
        .iter()
        .map(|m| m.as_str().expect("member id is a string"))
        .collect();
    let mut lines = Vec::new();
    let mut offenders = Vec::new();
    for package in metadata["packages"].as_array().expect("metadata has packages") {
        if members.contains(&package["id"].as_str().unwrap_or_default()) {
            continue;
        }
        let name = package["name"].as_str().unwrap_or("?");
        let version = package["version"].as_str().unwrap_or("?");
        let line = match package["license"].as_str() {
            None => {
                let file = package["license_file"].as_str().unwrap_or("none");
                Err(format!("{name} {version}: no license field (license_file: {file}) -> refused"))
            }
            Some(expr) => match acceptable(expr, ALLOWED) {
                Ok(true) => Ok(format!("{name} {version}: {expr} -> ok")),
                Ok(false) => Err(format!("{name} {version}: {expr} -> refused")),
                Err(e) => Err(format!("{name} {version}: {expr} -> refused (unreadable: {e})")),
            },
        };
        match line {
            Ok(line) => lines.push(line),
            Err(line) => {
                lines.push(line.clone());
                offenders.push(line);
            }
        }
    }
    (lines, offenders)
}

/// `cargo metadata` of this workspace: from the local registry cache if everything is
/// there, otherwise letting cargo download what is missing (crates for other platforms
/// are listed too, and a build never downloads those).
fn cargo_metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let dir = env!("CARGO_MANIFEST_DIR");
    let run = |offline: bool| {
        let mut cmd = Command::new(&cargo);
        cmd.args(["metadata", "--format-version", "1", "--locked"]).current_dir(dir);
        if offline {
            cmd.arg("--offline");
        }
        cmd.output().unwrap_or_else(|e| panic!("running {cargo} metadata: {e}"))
    };
    let mut out = run(true);
    if !out.status.success() {
        println!(
            "cargo metadata --offline failed ({}); retrying online",
            String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or("").trim()
        );
        out = run(false);
    }
    assert!(out.status.success(), "cargo metadata failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

#[test]
fn every_dependency_has_a_gpl_compatible_licence() {
    let (lines, offenders) = check(&cargo_metadata());
    for line in &lines {
        println!("{line}");
    }
    println!("{} dependencies, {} refused", lines.len(), offenders.len());
    assert!(!lines.is_empty(), "cargo metadata listed no dependencies");
    assert!(offenders.is_empty(), "dependencies whose licence asbb cannot accept:\n{}", offenders.join("\n"));
}

#[test]
fn the_check_names_an_incompatible_dependency() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/licences/incompatible-metadata.json");
    let metadata: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let (lines, offenders) = check(&metadata);
    assert_eq!(lines, ["dual-licensed 1.2.3: MIT OR Apache-2.0 -> ok", "server-side-store 0.4.0: SSPL-1.0 -> refused"]);
    assert_eq!(offenders, ["server-side-store 0.4.0: SSPL-1.0 -> refused"]);
}

#[test]
fn a_package_without_a_license_field_is_refused() {
    let metadata = serde_json::json!({
        "packages": [
            {"name": "me", "version": "0.1.0", "id": "me", "license": "GPL-2.0-or-later"},
            {"name": "own-terms", "version": "1.0.0", "id": "own-terms", "license": null,
             "license_file": "LICENSE.txt"},
        ],
        "workspace_members": ["me"],
    });
    let (_, offenders) = check(&metadata);
    assert_eq!(offenders, ["own-terms 1.0.0: no license field (license_file: LICENSE.txt) -> refused"]);
}

#[test]
fn expressions() {
    let ok = |e: &str| acceptable(e, ALLOWED);
    assert_eq!(ok("MIT OR Apache-2.0"), Ok(true));
    assert_eq!(ok("(MIT OR Apache-2.0) AND Unicode-3.0"), Ok(true));
    assert_eq!(ok("Apache-2.0 WITH LLVM-exception"), Ok(true));
    assert_eq!(ok("Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT"), Ok(true));
    assert_eq!(ok("MIT/Apache-2.0"), Ok(true));
    assert_eq!(ok("Unlicense/MIT"), Ok(true));
    assert_eq!(ok("GPL-2.0+"), Ok(true));
    assert_eq!(ok("GPL-3.0-only"), Ok(false));
    assert_eq!(ok("AGPL-3.0-or-later"), Ok(false));
    assert_eq!(ok("SSPL-1.0"), Ok(false));
    assert_eq!(ok("MIT AND SSPL-1.0"), Ok(false));
    assert_eq!(ok("SSPL-1.0 OR MIT"), Ok(true));
    assert_eq!(ok("MIT AND (SSPL-1.0 OR BSD-3-Clause)"), Ok(true));
    // AND binds tighter than OR.
    assert_eq!(ok("SSPL-1.0 AND MIT OR ISC"), Ok(true));
    assert_eq!(ok("SSPL-1.0 AND (MIT OR ISC)"), Ok(false));
    // An exception not listed with its licence is not accepted.
    assert_eq!(ok("GPL-3.0-only WITH GCC-exception-3.1"), Ok(false));
    assert_eq!(ok("LicenseRef-Proprietary"), Ok(false));
    // Unreadable expressions are errors, which the check refuses.
    assert!(ok("").is_err());
    assert!(ok("(MIT OR Apache-2.0").is_err());
    assert!(ok("MIT OR").is_err());
    assert!(ok("MIT Apache-2.0").is_err());
    assert!(ok("MIT WITH").is_err());
    assert!(ok("MIT, Apache-2.0").is_err());
}
