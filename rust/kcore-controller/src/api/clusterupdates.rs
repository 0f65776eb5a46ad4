//! `kind: ClusterUpdate` on the generic routes (`/v1/clusterupdates`): operators apply and
//! delete rollouts, controllers read them (the rollout engine, issue 12, acts on them).

use kcore_api::clusterupdate::ClusterUpdateSpec;
use kcore_api::resource::Kind;
use kcore_pki::Role;

use super::resources::Definition;

pub(super) static DEFINITION: Definition = Definition {
    kind: Kind::ClusterUpdate,
    read: &[Role::Admin, Role::Controller],
    write: &[Role::Admin],
    validate: kcore_api::resource::canonical::<ClusterUpdateSpec>,
};
