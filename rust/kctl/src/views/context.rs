//! Contexts: the `kctl config get-contexts` table.

use serde::Serialize;

use crate::output::Tabular;

/// One row of `get-contexts`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextRow {
    pub current: bool,
    pub name: String,
    pub cluster: String,
    pub controllers: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct ContextRows(pub Vec<ContextRow>);

impl Tabular for ContextRows {
    fn headers(&self, _wide: bool) -> Vec<String> {
        ["CURRENT", "NAME", "CLUSTER", "CONTROLLERS"]
            .map(String::from)
            .to_vec()
    }

    fn rows(&self, _wide: bool) -> Vec<Vec<String>> {
        self.0
            .iter()
            .map(|c| {
                vec![
                    if c.current { "*".into() } else { String::new() },
                    c.name.clone(),
                    c.cluster.clone(),
                    c.controllers.join(","),
                ]
            })
            .collect()
    }
}
