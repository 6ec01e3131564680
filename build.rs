// SPDX-License-Identifier: GPL-2.0-or-later
//! Without feature `slurm`: nothing (the core and the CLIs build without SLURM or clang).
//! With it: bindgen over SLURM's public headers and the matching source tree's
//! internal headers (see slurm-headers/README.md), into OUT_DIR/slurm_bindings.rs.

/// Differences between the SLURM releases asbb supports, as `cfg`s for the glue. The
/// core never sees them.
const RELEASE_CFGS: &[(&str, u32)] = &[
    // job_modify(job_desc, job, uid, char **err_msg): since 23.02.
    ("slurm_modify_err_msg", 0x170200),
    // jobcomp_p_set_location(void) instead of (char *location): 24.11 has it.
    ("slurm_jobcomp_location_void", 0x180b00),
    // job_desc_msg_t has no job_id (only job_id_str): 26.05 (its 26.05 branch).
    ("slurm_desc_no_job_id", 0x1a0500),
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for (cfg, _) in RELEASE_CFGS {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    // The plugins must share the system's libsqlite3 (see `bundled-sqlite` in
    // Cargo.toml). Building them in one cargo run with the CLIs unifies the features.
    if std::env::var_os("CARGO_FEATURE_SLURM").is_some() && std::env::var_os("CARGO_FEATURE_BUNDLED_SQLITE").is_some() {
        println!("cargo:warning=the SLURM plugins are being built with a private copy of SQLite: two plugins in slurmctld then break each other's locks; build them alone (make plugins)");
    }
    #[cfg(feature = "slurm")]
    slurm::generate();
}

#[cfg(feature = "slurm")]
mod slurm {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// What the glue reads; everything else in SLURM's headers stays out.
    const TYPES: &[&str] = &[
        "job_desc_msg_t",
        "job_record_t",
        "job_details",
        "job_array_struct_t",
        "part_record_t",
        "node_record_t",
        "slurmdb_assoc_rec_t",
        "slurm_conf_t",
        "slurmdb_qos_rec_t",
        "slurmdb_user_rec_t",
        "assoc_mgr_lock_t",
        "job_states",
        "job_state_reason",
        "slurm_err_t",
        "asbb_flags",
        "job_defaults_t",
    ];
    const VARS: &[&str] = &[
        "SLURM_VERSION_NUMBER",
        "SLURM_SUCCESS",
        "SLURM_ERROR",
        "NO_VAL.*",
        "INFINITE.*",
        "MEM_PER_CPU",
        "JOB_DEF_.*",
        "JOB_STATE_BASE",
        "CR_CPU",
        "CR_CORE",
        "CR_SOCKET",
        "CR_ONE_TASK_PER_CORE",
        "slurm_conf",
    ];

    /// SLURM's sentinels in their C widths (bindgen would make NO_VAL64 an `i32` -2).
    #[derive(Debug)]
    struct SentinelTypes;

    impl bindgen::callbacks::ParseCallbacks for SentinelTypes {
        fn int_macro(&self, name: &str, _value: i64) -> Option<bindgen::callbacks::IntKind> {
            use bindgen::callbacks::IntKind;
            match name {
                "NO_VAL8" | "INFINITE8" => Some(IntKind::U8),
                "NO_VAL16" | "INFINITE16" | "CR_CPU" | "CR_CORE" | "CR_SOCKET" | "CR_ONE_TASK_PER_CORE" => {
                    Some(IntKind::U16)
                }
                "NO_VAL" | "INFINITE" | "JOB_STATE_BASE" | "SLURM_VERSION_NUMBER" => Some(IntKind::U32),
                "NO_VAL64" | "INFINITE64" | "MEM_PER_CPU" => Some(IntKind::U64),
                "SLURM_SUCCESS" | "SLURM_ERROR" => Some(IntKind::Int),
                _ => None,
            }
        }
    }

    fn fail(msg: &str) -> ! {
        eprintln!("error: asbb (feature slurm): {msg}");
        std::process::exit(1);
    }

    /// `SLURM_VERSION_NUMBER` from the installed `slurm_version.h` (0x160508 = 22.05.8).
    fn slurm_version(version_h: &Path) -> u32 {
        let text = std::fs::read_to_string(version_h)
            .unwrap_or_else(|e| fail(&format!("cannot read {}: {e} (install libslurm-dev)", version_h.display())));
        text.lines()
            .find_map(|l| l.strip_prefix("#define SLURM_VERSION_NUMBER"))
            .and_then(|v| u32::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok())
            .unwrap_or_else(|| fail(&format!("no SLURM_VERSION_NUMBER in {}", version_h.display())))
    }

    /// The source tree: fetch-source.sh validates SLURM_SRC_DIR or fetches the
    /// Debian source package matching the installed SLURM.
    fn source_tree(manifest: &Path) -> PathBuf {
        let script = manifest.join("slurm-headers/fetch-source.sh");
        let out = Command::new("sh")
            .arg(&script)
            .output()
            .unwrap_or_else(|e| fail(&format!("cannot run {}: {e}", script.display())));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            fail(&format!(
                "{} failed; set SLURM_SRC_DIR to a SLURM source tree of the installed version.\n{stderr}",
                script.display()
            ));
        }
        let tree = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let tree = PathBuf::from(tree);
        if !tree.join("src/slurmctld/slurmctld.h").is_file() {
            fail(&format!("{} printed {}, which has no src/slurmctld/slurmctld.h", script.display(), tree.display()));
        }
        tree
    }

    /// Code for the crate's `rust-version` (not only for the compiler running now).
    fn rust_target() -> bindgen::RustTarget {
        let msrv = std::env::var("CARGO_PKG_RUST_VERSION").unwrap_or_default();
        msrv.parse().unwrap_or_else(|_| bindgen::RustTarget::stable(80, 0).unwrap_or_default())
    }

    pub fn generate() {
        for var in ["SLURM_SRC_DIR", "SLURM_INCLUDE_DIR", "ASBB_CACHE_DIR", "HOME"] {
            println!("cargo:rerun-if-env-changed={var}");
        }
        println!("cargo:rerun-if-changed=slurm-headers/fetch-source.sh");
        let manifest =
            PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| fail("no CARGO_MANIFEST_DIR")));
        let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| fail("no OUT_DIR")));
        let include = std::env::var("SLURM_INCLUDE_DIR").unwrap_or_else(|_| "/usr/include".into());
        let version_h = Path::new(&include).join("slurm/slurm_version.h");
        println!("cargo:rerun-if-changed={}", version_h.display());
        let version = slurm_version(&version_h);
        for (cfg, since) in super::RELEASE_CFGS {
            if version >= *since {
                println!("cargo:rustc-cfg={cfg}");
            }
        }
        let tree = source_tree(&manifest);
        println!("cargo:rerun-if-changed={}", tree.join("src/slurmctld/slurmctld.h").display());

        let wrapper = out_dir.join("asbb_slurm_wrapper.h");
        std::fs::write(
            &wrapper,
            "#include <slurm/slurm.h>\n#include <slurm/slurm_errno.h>\n\
             #include \"src/slurmctld/slurmctld.h\"\n#include \"src/common/assoc_mgr.h\"\n\
             /* Flags defined with SLURM_BIT(), which bindgen cannot evaluate. */\n\
             enum asbb_flags { ASBB_JOB_REQUEUE = JOB_REQUEUE,\n\
                               ASBB_ENFORCE_ASSOCS = ACCOUNTING_ENFORCE_ASSOCS,\n\
                               ASBB_JOB_MEM_SET = JOB_MEM_SET };\n",
        )
        .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", wrapper.display())));

        // The tree's own slurm/*.h are the public headers of the same release; only
        // slurm_version.h (generated by configure) comes from the installed headers.
        let mut builder = bindgen::Builder::default()
            .header(wrapper.to_string_lossy())
            .rust_target(rust_target())
            .clang_arg(format!("-I{}", tree.display()))
            .clang_arg(format!("-I{include}"))
            .parse_callbacks(Box::new(SentinelTypes))
            .default_enum_style(bindgen::EnumVariation::Consts)
            .prepend_enum_name(false)
            .layout_tests(false)
            .derive_default(false)
            .generate_comments(false);
        for t in TYPES {
            builder = builder.allowlist_type(t);
        }
        for v in VARS {
            builder = builder.allowlist_var(v);
        }
        let bindings = builder.generate().unwrap_or_else(|e| {
            fail(&format!("bindgen over {} with -I{} failed: {e}", wrapper.display(), tree.display()))
        });
        let out = out_dir.join("slurm_bindings.rs");
        bindings.write_to_file(&out).unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", out.display())));
    }
}
