//! The kcore controller: the cluster's state, PKI authority and API.
