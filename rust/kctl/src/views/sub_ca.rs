//! Sub-CAs: the `kctl get sub-cas` table (`GET /v1/pki/sub-cas`).

use kcore_api::controller::SubCaUse;
use serde::Serialize;

use crate::output::Tabular;

/// Sub-CAs as printed by `get sub-cas`.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct SubCas(pub Vec<SubCaUse>);

impl Tabular for SubCas {
    fn headers(&self, wide: bool) -> Vec<String> {
        let mut headers = vec!["SERIAL", "STATE", "SIGNING", "ISSUED-TO"];
        if wide {
            headers.extend(["RETIRED-AT", "REPLACED-BY"]);
        }
        headers.into_iter().map(String::from).collect()
    }

    fn rows(&self, wide: bool) -> Vec<Vec<String>> {
        let list = |items: &[String]| {
            if items.is_empty() {
                "-".to_string()
            } else {
                items.join(",")
            }
        };
        self.0
            .iter()
            .map(|c| {
                let mut row = vec![
                    c.serial.clone(),
                    c.state.clone(),
                    list(&c.signing_controllers),
                    list(&c.issued_to),
                ];
                if wide {
                    let retired = c.retired.as_ref();
                    row.push(retired.map_or("-".into(), |r| r.retired_at.clone()));
                    row.push(retired.map_or("-".into(), |r| r.replaced_by.clone()));
                }
                row
            })
            .collect()
    }
}
