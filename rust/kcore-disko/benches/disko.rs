//! Render and each validation level, against a baseline measured in the same run: the cost
//! of starting the evaluator at all (`nix-instantiate --eval --expr 1`). Levels 2 and 3 spawn
//! nix-instantiate, so compare them with the baseline, not with render.
//!
//! Run: `cargo bench -p kcore-disko --bench disko` (level 2/3 are skipped, with a note, when
//! nix-instantiate or the deep inputs are missing).

#![allow(clippy::unwrap_used)] // a benchmark that cannot set up should stop loudly

use criterion::{Criterion, criterion_group, criterion_main};
use kcore_disko::eval::Evaluator;
use kcore_disko::spec::{Backend, ThinPoolSpec};
use kcore_disko::{DeepInputs, DeviceTree, StorageSpec, render_fragment, syntax};

fn spec() -> StorageSpec {
    let mut spec = StorageSpec::new(
        "/dev/disk/by-id/ata-Samsung_SSD_870_S4EWNX0R100001",
        vec![
            "/dev/disk/by-id/ata-WDC_WD20EFRX_WD-WCC4M0000002".into(),
            "/dev/disk/by-id/ata-WDC_WD20EFRX_WD-WCC4M0000003".into(),
            "/dev/disk/by-id/ata-WDC_WD20EFRX_WD-WCC4M0000004".into(),
        ],
        Backend::Lvm,
    );
    spec.lvm.thin_pool = Some(ThinPoolSpec {
        name: "thinpool".into(),
        size: "90%".into(),
    });
    spec
}

fn bench(c: &mut Criterion) {
    let spec = spec();
    let text = render_fragment(&spec).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lvm-3.nix");
    std::fs::write(&file, &text).unwrap();

    let mut fast = c.benchmark_group("in-process");
    fast.bench_function("render (lvm, 3 data disks)", |b| {
        b.iter(|| render_fragment(&spec).unwrap())
    });
    fast.bench_function("level 1: rnix syntax", |b| {
        b.iter(|| assert!(syntax::check("f.nix", &text).is_empty()))
    });
    fast.finish();

    let evaluator = match Evaluator::new(None) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("SKIP: levels 2/3 and the baseline need nix-instantiate: {e}");
            return;
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The level-2 model check alone, on the JSON nix-instantiate printed.
    let json = rt.block_on(evaluator.eval_json(&file, None)).unwrap();
    let mut fast = c.benchmark_group("in-process");
    fast.bench_function("level 2: device-tree check only", |b| {
        b.iter(|| DeviceTree::from_json(&json).unwrap())
    });
    fast.finish();

    let mut spawn = c.benchmark_group("nix-instantiate");
    spawn.sample_size(20);
    spawn.measurement_time(std::time::Duration::from_secs(5));
    spawn.bench_function("baseline: --eval --expr 1", |b| {
        b.iter(|| rt.block_on(evaluator.baseline()).unwrap())
    });
    spawn.bench_function("level 2: eval + device-tree check", |b| {
        b.iter(|| rt.block_on(evaluator.level2(&file, None)).unwrap())
    });
    match DeepInputs::from_env() {
        Some(inputs) => {
            spawn.bench_function("level 3: disko types to create+mount scripts", |b| {
                b.iter(|| rt.block_on(evaluator.level3(&file, &inputs)).unwrap())
            });
        }
        None => eprintln!("SKIP: level 3 needs KCORE_TEST_DISKO and KCORE_TEST_NIXPKGS_LIB"),
    }
    spawn.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
