//! The benchmark suite (see `docs/benchmarks.md` and `tally_benches::suite`);
//! `benches/run-suite.sh` builds Tally and the peers' packages, then runs this.

fn main() -> std::process::ExitCode {
    tally_benches::suite::main(std::env::args().skip(1))
}
