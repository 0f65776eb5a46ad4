//! Restricted, bounded evaluation of submitted Nix (security probe D4, D12).

use super::support::*;

/// Small bounds so the bound tests are quick.
fn bounded(max_concurrent: usize) -> serde_json::Value {
    json!({"evaluation": {
        "memoryLimitMiB": 256,
        "cpuLimitSeconds": 2,
        "maxConcurrent": max_concurrent,
    }})
}

const SECRET: &str = "KCORE-AGENT-SECRET-line1\nsecond-secret-line\n";

/// The whole error as it came over the wire (message and details).
fn body(err: &ClientError) -> String {
    match err {
        ClientError::Api { error, .. } => serde_json::to_string(error).unwrap(),
        other => panic!("expected an API error, got {other}"),
    }
}

fn status(err: &ClientError) -> u16 {
    match err {
        ClientError::Api { status, .. } => status.as_u16(),
        other => panic!("expected an API error, got {other}"),
    }
}

fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains("KCORE-AGENT-SECRET")
            && !text.contains("second-secret-line")
            && !text.contains("root:"),
        "{what} leaked: {text}"
    );
}

/// A disk on `device_expr` (with content: kcore-disko refuses a disk without it).
fn disk_layout(device_expr: &str) -> String {
    format!(
        "{{ disko.devices.disk.x = {{ type = \"disk\"; device = {device_expr}; content = {{ type = \"filesystem\"; format = \"ext4\"; }}; }}; }}"
    )
}

async fn dry_err(bed: &DiskoBed, layout: &str) -> ClientError {
    bed.admin
        .post_json::<_, DiskoPlanResponse>("/v1/disko/apply", &dry(layout))
        .await
        .unwrap_err()
}

async fn nix_err(bed: &DiskoBed, config: &str) -> ClientError {
    bed.admin
        .post_json::<_, OperationResult>("/v1/nix/apply", &nix_req(config, true))
        .await
        .unwrap_err()
}

/// What the review did through the HTTP routes: a secret read into a planned device,
/// `/etc/shadow` thrown, `/root` listed, an imported secret quoted by apply-nix, the
/// environment, and fetchurl to a listener on 127.0.0.1. Each is refused (or, for
/// getEnv, empty), nothing of the files comes back, and the listener sees no request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_nix_reads_no_file_environment_or_network() {
    let bed = disko_bed(bounded(2), vec![]).await;
    let secret = bed.node.path("secret");
    std::fs::write(&secret, SECRET).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let secret = std::fs::canonicalize(secret).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let secret_s = secret.display().to_string();

    for device in [
        format!("\"/dev/disk/by-id/x\" + builtins.readFile {secret_s}"),
        "throw (builtins.replaceStrings [\"\\n\"] [\" | \"] (builtins.readFile /etc/shadow))"
            .to_string(),
        "throw (builtins.toJSON (builtins.attrNames (builtins.readDir /root)))".to_string(),
        "import /etc/passwd".to_string(),
        format!("import {secret_s}"),
        format!("import (builtins.fetchurl \"{url}/fetchurl-probe\")"),
        format!("builtins.fetchTarball \"{url}/fetchtarball-probe\""),
    ] {
        let err = dry_err(&bed, &disk_layout(&device)).await;
        assert_eq!(code(&err), "DISKO_INVALID", "{device}: {err}");
        assert_eq!(status(&err), 422);
        let text = body(&err);
        assert!(
            text.contains("forbidden in restricted mode"),
            "{device}: {text}"
        );
        assert_clean(&device, &text);
    }
    for config in [
        format!("import {secret_s}"),
        format!("throw (builtins.readFile {secret_s})"),
        "import /etc/passwd".to_string(),
        format!("import (builtins.fetchurl \"{url}/nix-fetchurl-probe\")"),
    ] {
        let err = nix_err(&bed, &config).await;
        assert_eq!(code(&err), "NIX_INVALID", "{config}: {err}");
        let text = body(&err);
        assert!(
            text.contains("forbidden in restricted mode"),
            "{config}: {text}"
        );
        assert_clean(&config, &text);
    }
    assert!(!bed.node.path("flake/kcore-node.nix").exists());

    // getEnv evaluates to "": the plan shows the device without the agent's HOME.
    let plan: DiskoPlanResponse = bed
        .admin
        .post_json(
            "/v1/disko/apply",
            &dry(&disk_layout(
                "\"/dev/disk/by-id/x\" + builtins.getEnv \"HOME\" + builtins.getEnv \"PATH\"",
            )),
        )
        .await
        .unwrap();
    assert_eq!(plan.plan.targets[0].device, "/dev/disk/by-id/x");

    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("the listener received a connection from {peer}"),
        Err(e) => panic!("accept: {e}"),
    }
    bed.agent.stop().await;
}

const BOMB: &str = "builtins.length (builtins.attrNames (builtins.listToAttrs (builtins.genList (i: { name = toString i; value = i; }) 20000000)))";
/// 600,000 traces of 48 characters: about 34 MiB of stderr.
const FLOOD: &str = "builtins.foldl' (a: i: builtins.trace \"0123456789abcdef0123456789abcdef0123456789abcdef\" a) { } (builtins.genList (i: i) 600000)";
const SPIN: &str = "let f = n: if n == 0 then 0 else f (n - 1); in builtins.foldl' (a: i: a + f 10000) 0 (builtins.genList (x: x) 100000)";

/// A layout or configuration that allocates without bound is stopped by the memory
/// bound, a CPU-heavy fold by the CPU bound, a huge value by the output bound; both
/// routes answer the same codes (422 `EVAL_MEMORY_LIMIT`, `EVAL_TIMEOUT`,
/// `EVAL_OUTPUT_LIMIT`), and the agent keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_evaluations_stop_at_their_bounds_and_the_agent_keeps_serving() {
    let bed = disko_bed(bounded(2), vec![]).await;
    let disko_bomb = disk_layout(&format!("toString ({BOMB})"));
    let nix_bomb = format!("builtins.seq ({BOMB}) {{ }}");
    let disko_spin = disk_layout(&format!("toString ({SPIN})"));
    let nix_spin = format!("builtins.seq ({SPIN}) {{ }}");
    for (what, err) in [
        ("disko bomb", dry_err(&bed, &disko_bomb).await),
        ("nix bomb", nix_err(&bed, &nix_bomb).await),
    ] {
        assert_eq!(code(&err), "EVAL_MEMORY_LIMIT", "{what}: {err}");
        assert_eq!(status(&err), 422, "{what}");
        assert!(err.to_string().contains("256 MiB"), "{what}: {err}");
        assert!(
            err.to_string().contains("evaluation.memoryLimitMiB"),
            "{what}: {err}"
        );
    }
    for (what, err) in [
        ("disko spin", dry_err(&bed, &disko_spin).await),
        ("nix spin", nix_err(&bed, &nix_spin).await),
    ] {
        assert_eq!(code(&err), "EVAL_TIMEOUT", "{what}: {err}");
        assert_eq!(status(&err), 422, "{what}");
        assert!(
            err.to_string().contains("CPU-time bound of 2 s"),
            "{what}: {err}"
        );
    }
    // 32 MiB of output (a huge device string; a flood of traces on apply-nix) stops at the
    // output bound instead of being read into the agent.
    // 16 bytes doubled 21 times: 32 MiB, well inside the 256 MiB memory bound.
    let huge = "builtins.foldl' (s: _: s + s) \"0123456789abcdef\" (builtins.genList (i: i) 21)";
    for (what, err) in [
        ("disko output", dry_err(&bed, &disk_layout(huge)).await),
        ("nix trace", nix_err(&bed, FLOOD).await),
    ] {
        assert_eq!(code(&err), "EVAL_OUTPUT_LIMIT", "{what}: {err}");
        assert_eq!(status(&err), 422, "{what}");
        assert!(
            body(&err).len() < 16 * 1024,
            "{what}: {} bytes",
            body(&err).len()
        );
    }
    // Still serving, and an ordinary layout still plans.
    let health: serde_json::Value = bed.admin.get_json("/v1/health").await.unwrap();
    assert_eq!(health["nodeId"], "node-1");
    let plan: DiskoPlanResponse = bed
        .admin
        .post_json("/v1/disko/apply", &dry(DATA_DISK))
        .await
        .unwrap();
    assert!(plan.plan_hash.starts_with("sha256:"));
    bed.agent.stop().await;
}

/// With `maxConcurrent: 1`, of two evaluations sent at once (one per route: they share
/// the bound) one runs and the other is refused at once with 429 `EVAL_BUSY`; once
/// the first has finished, evaluations are accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_evaluations_beyond_the_bound_are_refused_busy() {
    let bed = disko_bed(bounded(1), vec![]).await;
    let disko_spin = disk_layout(&format!("toString ({SPIN})"));
    let nix_spin = format!("builtins.seq ({SPIN}) {{ }}");
    let (a, b) = tokio::join!(dry_err(&bed, &disko_spin), nix_err(&bed, &nix_spin));
    let mut codes = vec![code(&a), code(&b)];
    codes.sort();
    assert_eq!(codes, ["EVAL_BUSY", "EVAL_TIMEOUT"], "{a} / {b}");
    let busy = if code(&a) == "EVAL_BUSY" { &a } else { &b };
    assert_eq!(status(busy), 429);
    assert!(
        busy.to_string().contains("evaluation.maxConcurrent"),
        "{busy}"
    );
    let plan: DiskoPlanResponse = bed
        .admin
        .post_json("/v1/disko/apply", &dry(DATA_DISK))
        .await
        .unwrap();
    assert!(plan.plan_hash.starts_with("sha256:"));
    bed.agent.stop().await;
}

/// Code frames come back only from the submitted text: an error raised inside nixpkgs
/// lib (readable for layouts that use `lib`) names its position without quoting it, and
/// apply-nix's message quotes the submitted line, not the agent's own expression.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_quote_only_the_submitted_text() {
    let Some(deep) = deep_inputs() else { return };
    let bed = disko_bed(
        json!({"disko": {"diskoSource": deep.disko, "nixpkgsLib": deep.nixpkgs_lib}}),
        vec![],
    )
    .await;
    let layout = "{ lib, ... }: { disko.devices.disk.x = { type = \"disk\"; device = lib.strings.escapeShellArg { }; }; }";
    let err = dry_err(&bed, layout).await;
    assert_eq!(code(&err), "DISKO_INVALID", "{err}");
    let text = body(&err);
    assert!(text.contains("cannot coerce a set to a string"), "{text}");
    assert!(!text.contains("toString arg"), "nixpkgs lib quoted: {text}");

    let err = nix_err(&bed, "let\n  a = undefinedThing;\nin a\n").await;
    assert_eq!(code(&err), "NIX_INVALID", "{err}");
    let text = body(&err);
    assert!(text.contains("a = undefinedThing;"), "{text}");
    let err = nix_err(&bed, "throw \"kcore-boom\"").await;
    let text = body(&err);
    assert!(text.contains("kcore-boom"), "{text}");
    assert!(
        !text.contains("typeOf"),
        "the agent's expression quoted: {text}"
    );
    bed.agent.stop().await;
}

/// D12: a layout nested 5,000 deep got 1,025 near-identical level-1 findings (234 KB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_layout_gets_a_short_answer() {
    let bed = disko_bed(json!({}), vec![]).await;
    let nested = format!("{}1{}", "{ a = ".repeat(5000), " ; }".repeat(5000));
    let err = dry_err(&bed, &nested).await;
    assert_eq!(code(&err), "DISKO_INVALID");
    let ClientError::Api { error, .. } = &err else {
        unreachable!()
    };
    let findings = error.details["findings"].as_array().unwrap();
    assert!(
        !findings.is_empty() && findings.len() <= kcore_disko::MAX_REPORTED,
        "{} findings",
        findings.len()
    );
    assert!(body(&err).len() < 16 * 1024, "{} bytes", body(&err).len());
    bed.agent.stop().await;
}
