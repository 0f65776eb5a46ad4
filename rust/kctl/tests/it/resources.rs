//! The generic resource commands against an in-process controller with real mutual TLS:
//! `kctl apply -f` (several documents, stdin, dry run on the server), `get <kind>` in
//! every output format and with `-l`, `describe`, `delete`, and the refusals that name
//! the document and the field path.

use super::lab::{Lab, kctl, kctl_stdin, ok};
use super::support::text;
use std::path::PathBuf;

use kcore_api::cluster::NodeReport;
use serde_json::Value;

const REV: &str = "0123456789abcdef0123456789abcdef01234567";

fn update(name: &str, extra_strategy: &str) -> String {
    format!(
        "kind: ClusterUpdate
metadata: {{name: {name}}}
spec:
  target: {{flakeRef: \"github:kcorehypervisor/kcore\", flakeRev: \"{REV}\"}}
  selector: {{allNodes: true}}
  strategy: {{strategyType: one-at-a-time{extra_strategy}}}
"
    )
}

fn vm(name: &str, tier: &str, cpus: u32) -> String {
    format!(
        "kind: VM
metadata:
  name: {name}
  labels: {{tier: {tier}}}
spec: {{storageBackend: lvm, storageSizeBytes: 10G, cpus: {cpus}}}
"
    )
}

fn write(lab: &Lab, file: &str, text: &str) -> PathBuf {
    let path = lab.home().join(file);
    std::fs::write(&path, text).unwrap();
    path
}

async fn get_json(lab: &Lab, args: &[&str]) -> Value {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    full.extend(["-o", "json"]);
    serde_json::from_str(&ok(kctl(lab.home(), &full).await)).unwrap()
}

/// The names in a `get <kind> -o json` list.
fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_a_file_of_two_documents_then_get_describe_and_delete_them() {
    let lab = Lab::start(false).await;
    let file = write(
        &lab,
        "two.yaml",
        &format!("{}---\n{}", update("release-1", ""), vm("web-1", "web", 2)),
    );
    let file = file.to_str().unwrap();
    let out = ok(kctl(lab.home(), &["apply", "-f", file]).await);
    assert_eq!(
        out, "clusterupdate/release-1 created\nvm/web-1 created\n",
        "{out}"
    );
    // Applying the same file again changes nothing.
    let out = ok(kctl(lab.home(), &["apply", "-f", file]).await);
    assert_eq!(
        out, "clusterupdate/release-1 unchanged\nvm/web-1 unchanged\n",
        "{out}"
    );

    let table = ok(kctl(lab.home(), &["get", "clusterupdates"]).await);
    assert!(
        table.starts_with("NAME") && table.contains("release-1") && table.contains("0123456789ab"),
        "{table}"
    );
    let wide = ok(kctl(lab.home(), &["get", "vms", "-o", "wide"]).await);
    assert!(
        wide.contains("LABELS") && wide.contains("10.0 GiB") && wide.contains("tier=web"),
        "{wide}"
    );
    let one = get_json(&lab, &["vm", "web-1"]).await;
    assert_eq!(one["kind"], "VM");
    assert_eq!(one["metadata"]["generation"], 1);
    assert_eq!(one["spec"]["cpus"], 2);
    assert_eq!(one["spec"]["storageSizeBytes"], 10u64 << 30);
    let yaml = ok(kctl(lab.home(), &["get", "vm", "web-1", "-o", "yaml"]).await);
    let from_yaml: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(from_yaml, one);
    let row = ok(kctl(lab.home(), &["get", "vm", "web-1"]).await);
    assert_eq!(row.lines().count(), 2, "{row}");

    let described = ok(kctl(lab.home(), &["describe", "vm", "web-1"]).await);
    assert!(
        described.contains("Name:        web-1")
            && described.contains("Labels:      tier=web")
            && described.contains("  storageBackend: lvm"),
        "{described}"
    );
    let described = ok(kctl(lab.home(), &["describe", "clusterupdate", "release-1"]).await);
    assert!(described.contains(REV), "{described}");

    let out = ok(kctl(lab.home(), &["delete", "vm", "web-1"]).await);
    assert_eq!(out, "vm/web-1 deleted\n");
    let gone = kctl(lab.home(), &["get", "vm", "web-1"]).await;
    assert_eq!(gone.status.code(), Some(1), "{}", text(&gone));
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("NOT_FOUND"),
        "{}",
        text(&gone)
    );
    let again = kctl(lab.home(), &["delete", "vm", "web-1"]).await;
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(names(&get_json(&lab, &["vms"]).await).is_empty());
    assert_eq!(
        names(&get_json(&lab, &["clusterupdates"]).await),
        ["release-1"]
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_reads_documents_from_stdin_and_get_selects_by_label() {
    let lab = Lab::start(false).await;
    let docs = format!("{}---\n{}", vm("web-1", "web", 1), vm("db-1", "db", 4));
    let out = ok(kctl_stdin(lab.home(), &["apply", "-f", "-"], Some(&docs)).await);
    assert_eq!(out, "vm/web-1 created\nvm/db-1 created\n", "{out}");
    assert_eq!(
        names(&get_json(&lab, &["vms", "-l", "tier=web"]).await),
        ["web-1"]
    );
    assert_eq!(
        names(&get_json(&lab, &["vms", "-l", "tier!=web"]).await),
        ["db-1"]
    );
    assert!(names(&get_json(&lab, &["vms", "-l", "gpu"]).await).is_empty());
    let mut all = names(&get_json(&lab, &["vms"]).await);
    all.sort();
    assert_eq!(all, ["db-1", "web-1"]);
    // A selector kctl cannot parse is refused before anything is sent.
    let bad = kctl(lab.home(), &["get", "vms", "-l", "tier=a b"]).await;
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("selector"),
        "{}",
        text(&bad)
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refuses_an_unknown_kind_or_field_naming_the_document_and_path() {
    let lab = Lab::start(false).await;
    let file = write(
        &lab,
        "pods.yaml",
        &format!(
            "{}---\nkind: Pod\nmetadata: {{name: p}}\nspec: {{}}\n",
            vm("web-1", "web", 1)
        ),
    );
    let out = kctl(lab.home(), &["apply", "-f", file.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    // The file as given, and the line of `kind: Pod` (after the VM and the `---`).
    let line = vm("web-1", "web", 1).lines().count() + 2;
    assert!(
        err.contains(&format!(
            "{}:{line}: document 2: kind: \"Pod\"",
            file.display()
        )) && err.contains("is not a kind of resource")
            && err.contains("INVALID_FIELD"),
        "{err}"
    );
    // Checked before anything was sent: the valid first document was not applied.
    assert!(names(&get_json(&lab, &["vms"]).await).is_empty());

    let typo = update("release-1", ", batchSzie: 2");
    let out = kctl_stdin(lab.home(), &["apply", "-f", "-"], Some(&typo)).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("<stdin>:")
            && err.contains(
                ": document 1: spec.strategy.batchSzie: unknown key `batchSzie`: the keys here are"
            ),
        "{err}"
    );
    let out = kctl_stdin(
        lab.home(),
        &["apply", "-f", "-"],
        Some(&vm("web-1", "web", 0)),
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("document 1: spec.cpus"),
        "{}",
        text(&out)
    );
    assert!(names(&get_json(&lab, &["clusterupdates"]).await).is_empty());
    // `get` of an unknown kind: refused before anything is sent, with the kinds there are.
    let out = kctl(lab.home(), &["get", "pods"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("kind: \"pods\" is not a kind of resource; use one of Node, Controller, ClusterUpdate, VM"),
        "{}",
        text(&out)
    );
    // Controllers register themselves: `get controllers` lists each with its address.
    let controllers = get_json(&lab, &["controllers"]).await;
    let list = controllers.as_array().expect("a list");
    assert!(
        !list.is_empty() && list.iter().all(|c| c["spec"]["address"].is_string()),
        "{controllers}"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_dry_run_server_prints_the_diff_and_writes_nothing() {
    let lab = Lab::start(false).await;
    // A new object: the diff lists what would be written, and nothing is.
    let out = ok(kctl_stdin(
        lab.home(),
        &["apply", "-f", "-", "--dry-run=server"],
        Some(&vm("web-1", "web", 1)),
    )
    .await);
    assert!(
        out.starts_with("vm/web-1 (server dry run) created\n")
            && out.contains("  spec.cpus: (none) -> 1\n"),
        "{out}"
    );
    let missing = kctl(lab.home(), &["get", "vm", "web-1"]).await;
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));

    ok(kctl_stdin(
        lab.home(),
        &["apply", "-f", "-"],
        Some(&vm("web-1", "web", 1)),
    )
    .await);
    let out = ok(kctl_stdin(
        lab.home(),
        &["apply", "-f", "-", "--dry-run", "server"],
        Some(&vm("web-1", "db", 2)),
    )
    .await);
    assert_eq!(
        out,
        "vm/web-1 (server dry run) configured\n  metadata.labels.tier: \"web\" -> \"db\"\n  spec.cpus: 1 -> 2\n",
        "{out}"
    );
    let kept = get_json(&lab, &["vm", "web-1"]).await;
    assert_eq!(kept["spec"]["cpus"], 1, "{kept}");
    assert_eq!(kept["metadata"]["labels"]["tier"], "web", "{kept}");
    assert_eq!(kept["metadata"]["generation"], 1, "{kept}");

    // -o json carries the controller's answer, dryRun and changes included.
    let answers: Value = serde_json::from_str(&ok(kctl_stdin(
        lab.home(),
        &["apply", "-f", "-", "--dry-run=server", "-o", "json"],
        Some(&vm("web-1", "web", 3)),
    )
    .await))
    .unwrap();
    assert_eq!(answers[0]["dryRun"], true, "{answers}");
    assert_eq!(answers[0]["changes"][0]["path"], "spec.cpus", "{answers}");

    // The same change for real: stored, and the generation moves on.
    let out = ok(kctl_stdin(
        lab.home(),
        &["apply", "-f", "-"],
        Some(&vm("web-1", "web", 2)),
    )
    .await);
    assert_eq!(out, "vm/web-1 configured\n");
    let changed = get_json(&lab, &["vm", "web-1"]).await;
    assert_eq!(changed["spec"]["cpus"], 2, "{changed}");
    assert_eq!(changed["metadata"]["generation"], 2, "{changed}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_node_removes_its_record_and_get_says_not_found() {
    let lab = Lab::start(false).await;
    for (id, rack) in [("node-a", "a"), ("node-b", "b")] {
        let report = NodeReport {
            hostname: format!("host-{id}"),
            dc_id: "DC1".into(),
            labels: [("rack".to_string(), rack.to_string())].into(),
            ..Default::default()
        };
        lab.join_with(id, report).await;
    }
    // Nodes are selected by the labels they report.
    let racked: Value = get_json(&lab, &["nodes", "-l", "rack=b"]).await;
    assert_eq!(racked.as_array().unwrap().len(), 1, "{racked}");
    assert_eq!(racked[0]["nodeId"], "node-b", "{racked}");
    let out = ok(kctl(lab.home(), &["delete", "node", "node-a"]).await);
    assert_eq!(out, "node/node-a deleted\n");
    let gone = kctl(lab.home(), &["get", "node", "node-a"]).await;
    assert_eq!(gone.status.code(), Some(1), "{}", text(&gone));
    let left: Value = get_json(&lab, &["nodes"]).await;
    let ids: Vec<&str> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["nodeId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["node-b"]);
    // Bad names are refused before any request, naming the argument.
    let out = kctl(lab.home(), &["delete", "vm", "Web_1"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("<NAME>"),
        "{}",
        text(&out)
    );
    lab.stop().await;
}
