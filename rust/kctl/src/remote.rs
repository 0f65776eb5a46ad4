//! A kcore server as kctl talks to it: the [`kcore_net::Client`] plus what kctl expected
//! of the server (the context's CA and cluster, a pinned fingerprint, `-k`), so that a
//! failure is told in terms the operator can act on: which server, what was wrong with its
//! certificate or with ours, and what to try, instead of nested transport errors.
//!
//! `kcore_net` reports an unreachable server as text (each attempt and its reason); the
//! TLS reasons are rustls' own messages, recognised here by their stable prefixes
//! (`invalid peer certificate: `, `received fatal alert: `). Anything not recognised is
//! passed on unchanged.

use kcore_net::{Client, ClientError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::agent_client::Trust;
use crate::context::Context;
use crate::exit::Refused;

/// What kctl expected at the other end; decides the hints.
#[derive(Debug, Clone)]
pub enum Expected {
    /// A controller of the context's cluster, under the context's CA.
    Controller(Context),
    /// A managed-mode agent, authenticated with the context's CA and admin certificate.
    Agent(Context),
    /// An install-mode agent with this pinned fingerprint (`--fingerprint`).
    PinnedAgent(String),
    /// An install-mode agent, unverified (`-k`).
    InsecureAgent,
}

impl Expected {
    /// For an agent reached with `trust`; `ctx` is the context when `trust` is the context's.
    pub fn agent(trust: &Trust, ctx: Option<Context>) -> Expected {
        match (trust, ctx) {
            (Trust::Insecure, _) => Expected::InsecureAgent,
            (Trust::Pinned(fp), _) => Expected::PinnedAgent(fp.clone()),
            (Trust::Context, Some(ctx)) => Expected::Agent(ctx),
            // Not built that way; without a context there is nothing to say about a CA.
            (Trust::Context, None) => Expected::InsecureAgent,
        }
    }
}

/// A client and what it expects; every call's error goes through [`Remote::explain`].
pub struct Remote {
    client: Client,
    expected: Expected,
}

impl Remote {
    pub fn new(client: Client, expected: Expected) -> Remote {
        Remote { client, expected }
    }

    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.client
            .get_json(path)
            .await
            .map_err(|e| self.explain(e))
    }

    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.client
            .post_json(path, body)
            .await
            .map_err(|e| self.explain(e))
    }

    pub async fn put_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.client
            .put_json(path, body)
            .await
            .map_err(|e| self.explain(e))
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.client.delete(path).await.map_err(|e| self.explain(e))
    }

    /// [`Client::stream_ndjson`] (a GET when `body` is `None`).
    pub async fn stream_ndjson<B, T, F>(
        &self,
        path: &str,
        body: Option<&B>,
        on_item: F,
    ) -> anyhow::Result<()>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
        F: FnMut(T),
    {
        self.client
            .stream_ndjson(path, body, on_item)
            .await
            .map_err(|e| self.explain(e))
    }

    /// A 4xx answer with a code is a refusal (exit 1); a server that could not be reached
    /// over TLS is explained; everything else stays a failure (exit 3) as `kcore_net` says it.
    pub fn explain(&self, err: ClientError) -> anyhow::Error {
        match err {
            ClientError::Api { status, error, .. } if status.is_client_error() => {
                Refused::from_wire(error.code, error.message).into()
            }
            ClientError::Unreachable {
                ref attempts,
                ref not_tried,
            } if attempts
                .iter()
                .any(|(_, why)| TlsProblem::of(why).is_some()) =>
            {
                anyhow::anyhow!(self.unreachable_text(attempts, not_tried))
            }
            other => anyhow::Error::new(other),
        }
    }

    fn unreachable_text(&self, attempts: &[(String, String)], not_tried: &[String]) -> String {
        let mut lines = Vec::new();
        let mut hints: Vec<String> = Vec::new();
        for (server, why) in attempts {
            match TlsProblem::of(why) {
                Some(problem) => {
                    lines.push(format!("{server}: {}", problem.what(&self.expected)));
                    let hint = problem.hint(&self.expected, server);
                    if !hint.is_empty() && !hints.contains(&hint) {
                        hints.push(hint);
                    }
                }
                None => lines.push(format!("{server}: {why}")),
            }
        }
        let mut text = if lines.len() == 1 {
            lines.remove(0)
        } else {
            // Each server answered (at least one refused over TLS), none could be used.
            format!("no server could serve the request: {}", lines.join("; "))
        };
        if !not_tried.is_empty() {
            text.push_str(&format!(
                "; not tried (total time budget spent): {}",
                not_tried.join(", ")
            ));
        }
        for hint in hints {
            text.push_str("\nhint: ");
            text.push_str(&hint);
        }
        text
    }
}

/// What went wrong in a TLS handshake, from rustls' message.
#[derive(Debug, PartialEq, Eq)]
enum TlsProblem<'a> {
    /// kctl refused the server's certificate: not issued under the trusted CA.
    UnknownCa,
    /// kctl refused the server's certificate for another reason (a wrong identity, a
    /// pinned fingerprint that differs, a name or date problem): the reason, unwrapped.
    ServerCert(&'a str),
    /// The server ended the handshake with this alert (it refused kctl's certificate,
    /// or asked for one).
    Alert(&'a str),
    /// The other end does not speak TLS.
    NotTls,
}

impl<'a> TlsProblem<'a> {
    fn of(reason: &'a str) -> Option<TlsProblem<'a>> {
        if let Some((_, cert)) = reason.split_once("invalid peer certificate: ") {
            return Some(match cert.trim() {
                "UnknownIssuer" | "BadSignature" => TlsProblem::UnknownCa,
                // rustls prints a verifier's own error as `Other(OtherError(<message>))`.
                other => TlsProblem::ServerCert(
                    other
                        .strip_prefix("Other(OtherError(")
                        .and_then(|s| s.strip_suffix("))"))
                        .unwrap_or(other),
                ),
            });
        }
        if let Some((_, alert)) = reason.split_once("received fatal alert: ") {
            return Some(TlsProblem::Alert(
                alert
                    .split(|c: char| !c.is_alphanumeric())
                    .next()
                    .unwrap_or(alert),
            ));
        }
        if reason.contains("received corrupt message of type InvalidContentType") {
            return Some(TlsProblem::NotTls);
        }
        None
    }

    fn what(&self, expected: &Expected) -> String {
        match self {
            TlsProblem::UnknownCa => match expected {
                Expected::Controller(ctx) | Expected::Agent(ctx) => format!(
                    "its certificate is not issued under the CA file {}",
                    ctx.ca_file.display()
                ),
                _ => "its certificate is not issued under the trusted CA".into(),
            },
            TlsProblem::ServerCert(why) if why.starts_with("fingerprint mismatch") => {
                (*why).to_string()
            }
            TlsProblem::ServerCert(why) => format!("its certificate is refused: {why}"),
            TlsProblem::Alert("CertificateRequired") => {
                "it asks for a client certificate (TLS alert CertificateRequired)".into()
            }
            TlsProblem::Alert(alert) => match expected {
                Expected::Controller(ctx) | Expected::Agent(ctx) => format!(
                    "it refused the admin certificate {} (TLS alert {alert})",
                    ctx.cert_file.display()
                ),
                _ => format!("it ended the TLS handshake (alert {alert})"),
            },
            TlsProblem::NotTls => "it does not speak TLS".into(),
        }
    }

    fn hint(&self, expected: &Expected, server: &str) -> String {
        match (self, expected) {
            (TlsProblem::NotTls, _) => "kcore speaks TLS only: check the port (controllers \
                 listen on 9090, agents on 9091)"
                .into(),
            (TlsProblem::Alert("CertificateRequired"), Expected::PinnedAgent(_))
            | (TlsProblem::Alert("CertificateRequired"), Expected::InsecureAgent) => {
                "this agent requires a client certificate: use a context (the agent is in \
                 managed mode: run without -k / --fingerprint, so kctl authenticates with the \
                 context's admin certificate)"
                    .into()
            }
            (TlsProblem::Alert(_), Expected::Controller(ctx) | Expected::Agent(ctx)) => {
                format!(
                    "check that the admin certificate {} of context {:?} belongs to this \
                     cluster and has not expired (openssl x509 -noout -subject -dates -in {})",
                    ctx.cert_file.display(),
                    ctx.name,
                    ctx.cert_file.display()
                )
            }
            (_, Expected::Controller(ctx)) => format!(
                "kctl expects a controller of cluster {:?} (a certificate for \
                 kcore://{}/controller/<id>) issued under the CA file {} of context {:?}: \
                 check that {server} is one of this cluster's controllers and that the \
                 context's ca-file is this cluster's root CA",
                ctx.cluster,
                ctx.cluster,
                ctx.ca_file.display(),
                ctx.name
            ),
            (TlsProblem::UnknownCa, Expected::Agent(ctx)) => format!(
                "kctl checked the agent against the CA file {} of context {:?}. If the \
                 agent is in install mode (the live ISO), the agent presents a self-signed \
                 certificate: pass --fingerprint from its console (the SHA-256 it logged), \
                 or -k",
                ctx.ca_file.display(),
                ctx.name
            ),
            (_, Expected::Agent(ctx)) => format!(
                "kctl expects a node agent of cluster {:?} issued under the CA file {} of \
                 context {:?}: check --node",
                ctx.cluster,
                ctx.ca_file.display(),
                ctx.name
            ),
            (TlsProblem::ServerCert(_), Expected::PinnedAgent(_)) => {
                "this is not the agent whose fingerprint you pinned: compare --fingerprint \
                 with the fingerprint the agent logged at start (64 hex digits), and check \
                 --node"
                    .into()
            }
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_reasons_are_recognised() {
        let prefix = "error sending request for url (https://127.0.0.1:1/v1/nodes): client error (Connect): ";
        let cases = [
            (
                "invalid peer certificate: UnknownIssuer",
                Some(TlsProblem::UnknownCa),
            ),
            (
                "invalid peer certificate: BadSignature",
                Some(TlsProblem::UnknownCa),
            ),
            (
                "invalid peer certificate: Other(OtherError(fingerprint mismatch: expected a, got b))",
                Some(TlsProblem::ServerCert(
                    "fingerprint mismatch: expected a, got b",
                )),
            ),
            (
                "connection error: received fatal alert: CertificateRequired",
                Some(TlsProblem::Alert("CertificateRequired")),
            ),
            (
                "received corrupt message of type InvalidContentType",
                Some(TlsProblem::NotTls),
            ),
            ("tcp connect error: Connection refused (os error 111)", None),
        ];
        for (reason, want) in cases {
            assert_eq!(
                TlsProblem::of(&format!("{prefix}{reason}")),
                want,
                "{reason}"
            );
        }
    }
}
