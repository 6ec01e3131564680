// SPDX-License-Identifier: GPL-2.0-or-later
//! asbb-admin: administer asbb budgets. See `asbb-admin --help`.

use clap::Parser;

fn main() {
    let cli = asbb::cli::admin::AdminCli::parse();
    match asbb::cli::admin::run(cli) {
        Ok(out) => print!("{out}"),
        Err(e) => {
            eprintln!("asbb-admin: error: {}", e.message);
            std::process::exit(e.exit_code);
        }
    }
}
