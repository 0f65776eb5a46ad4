//! `kcore-controller`: hand over to the library's command line.
fn main() -> std::process::ExitCode {
    kcore_controller::cli::main()
}
