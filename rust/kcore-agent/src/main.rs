//! `kcore-agent`: parse, start tracing, hand over to the library.
fn main() {}
