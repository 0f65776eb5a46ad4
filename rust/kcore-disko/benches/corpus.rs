//! The public corpus (`tests/corpus/*.nix`) end to end: how many layouts kctl agrees with
//! disko's own CLI verdict on (or refuses as their header states), and the wall-clock time
//! for the whole corpus at each level, plus disko's CLI-style evaluation for comparison.
//! One pass per level, sequential, on this machine: a report, not a timed assertion.
//!
//! Run: `cargo bench -p kcore-disko --bench corpus` (needs nix-instantiate and the deep
//! inputs: `KCORE_TEST_DISKO` / `KCORE_TEST_NIXPKGS_LIB` or the cache fallback).

#![allow(clippy::unwrap_used)] // a benchmark that cannot set up should stop loudly

#[path = "../tests/disko/corpus_cases.rs"]
mod corpus_cases;

use std::time::{Duration, Instant};

use corpus_cases::{Judgement, judge, load};
use kcore_disko::eval::{Evaluator, validate_file};
use kcore_disko::{DeepInputs, syntax};

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let cases = load().unwrap();
    let (Ok(ev), Some(deep)) = (Evaluator::new(None), DeepInputs::from_env()) else {
        eprintln!("SKIP: the corpus benchmark needs nix-instantiate and the deep inputs");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let timed = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        start.elapsed()
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;

    let level1 = timed(&mut || {
        for c in &cases {
            let text = std::fs::read_to_string(&c.path).unwrap();
            let _ = syntax::check(&c.name, &text);
        }
    });
    let level2 = timed(&mut || {
        for c in &cases {
            let _ = rt.block_on(ev.level2(&c.path, Some(&deep.nixpkgs_lib)));
        }
    });
    let level3 = timed(&mut || {
        for c in &cases {
            let _ = rt.block_on(ev.level3(&c.path, &deep));
        }
    });
    let mut verdicts = Vec::new();
    let reference = timed(&mut || {
        for c in &cases {
            verdicts.push(rt.block_on(ev.disko_cli_verdict(&c.path, &deep)).unwrap());
        }
    });
    let mut results = Vec::new();
    let all = timed(&mut || {
        for c in &cases {
            results.push(rt.block_on(validate_file(&ev, &c.path, Some(&deep))));
        }
    });
    let (mut agree, mut stricter, mut wrong) = (0, 0, Vec::new());
    let mut lines = Vec::new();
    for ((c, v), r) in cases.iter().zip(&verdicts).zip(&results) {
        let judgement = judge(c, v, r);
        lines.push(format!("  {:<52} {judgement:?}  [{}]", c.name, c.source));
        match judgement {
            Judgement::Agree => agree += 1,
            Judgement::StricterAsStated => stricter += 1,
            Judgement::Disagree(why) => wrong.push(format!("{}: {why}", c.name)),
        }
    }
    let n = cases.len();
    println!("corpus: {n} layouts from public NixOS configurations (tests/corpus)");
    println!(
        "agreement with disko's CLI verdict: {agree} agree, {stricter} refused by kctl as stated (deliberately stricter), {} disagree",
        wrong.len()
    );
    for line in &lines {
        println!("{line}");
    }
    let per = |d: Duration| ms(d) / n as f64;
    println!("whole corpus, one pass each (total / per layout):");
    println!(
        "  level 1 (rnix syntax):                 {:8.1} ms / {:6.2} ms",
        ms(level1),
        per(level1)
    );
    println!(
        "  level 2 (module system + model):       {:8.1} ms / {:6.2} ms",
        ms(level2),
        per(level2)
    );
    println!(
        "  level 3 (disko's types to scripts):    {:8.1} ms / {:6.2} ms",
        ms(level3),
        per(level3)
    );
    println!(
        "  levels 1-3 (validate_file, as kctl):   {:8.1} ms / {:6.2} ms",
        ms(all),
        per(all)
    );
    println!(
        "  disko's CLI-style evaluation:          {:8.1} ms / {:6.2} ms",
        ms(reference),
        per(reference)
    );
}
