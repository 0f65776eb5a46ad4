//! The one-row table of a long operation's result (`kctl node operation`, and the end of
//! every apply that follows one).

use kcore_api::inventory::OperationResult;
use serde::Serialize;

use super::or_dash;
use crate::output::Tabular;

#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct ResultOut(pub OperationResult);

impl Tabular for ResultOut {
    fn headers(&self, _wide: bool) -> Vec<String> {
        [
            "OPERATION",
            "KIND",
            "STATUS",
            "GENERATION",
            "WRITTEN",
            "ERROR",
        ]
        .map(String::from)
        .to_vec()
    }

    fn rows(&self, _wide: bool) -> Vec<Vec<String>> {
        let r = &self.0;
        vec![vec![
            r.operation_id.clone(),
            r.kind.to_string(),
            serde_json::to_value(r.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            or_dash(r.generation.as_deref()),
            if r.written.is_empty() {
                "-".into()
            } else {
                r.written.join(",")
            },
            r.error
                .as_ref()
                .map_or_else(|| "-".into(), |e| format!("{}: {}", e.code, e.message)),
        ]]
    }
}
