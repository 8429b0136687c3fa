//! The `tally` command. It reads heap dumps written by the profiler and turns them into reports;
//! it links neither the allocator nor the profiler. The report formats arrive with the report-tool
//! issue; until then the command says so instead of pretending.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-V") => {
            println!("tally {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("tally: no report commands yet (run, report and leaks arrive with the report tool)");
            ExitCode::from(2)
        }
    }
}
