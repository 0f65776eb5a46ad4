//! `kcore-agent`: parse, start tracing, hand over to the library.
fn main() -> std::process::ExitCode {
    kcore_agent::cli::main()
}
