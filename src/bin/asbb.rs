// SPDX-License-Identifier: GPL-2.0-or-later
//! asbb: your SLURM budget. See `asbb --help`.

use clap::Parser;

fn main() {
    let cli = asbb::cli::user::UserCli::parse();
    match asbb::cli::user::run(cli) {
        Ok((out, code)) => {
            print!("{out}");
            std::process::exit(code);
        }
        Err(e) => {
            eprintln!("asbb: error: {}", e.message);
            std::process::exit(2);
        }
    }
}
