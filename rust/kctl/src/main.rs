//! `kctl`: the kcore operator CLI. All logic lives in the library; this only hands over.
fn main() -> std::process::ExitCode {
    kctl::main()
}
