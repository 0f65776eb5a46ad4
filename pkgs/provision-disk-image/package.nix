# `kcore-agent provision-disk` as an OCI image, to run as a privileged init container on a
# node (the operator guide's way): the agent binary, wrapped by pkgs/kcore with lvm2 and
# util-linux on its PATH, as the entrypoint, so the container's arguments and environment
# (PARTITION_LABEL, VOLUME_GROUP, POOL, NODE_ID or SATELLITE_ID, MARKER_DIR, LOG_LEVEL) are
# provision-disk's own. The container needs the host's /dev (for /dev/disk/by-partlabel
# and the device mapper) and a host directory at MARKER_DIR for the retry marker.
#
# dockerTools.buildLayeredImage { name, tag, contents, config } as declared in nixpkgs'
# pkgs/build-support/docker/default.nix (`config` is the OCI image config: Entrypoint,
# Env); one layer per store path, so a new kcore only replaces its own layers.
{
  dockerTools,
  kcore,
}:
dockerTools.buildLayeredImage {
  name = "kcore-provision-disk";
  # The crate version, not the output hash: the tag an operator pins in a pod spec.
  tag = kcore.version or "latest";
  contents = [ kcore ];
  config = {
    Entrypoint = [
      "${kcore}/bin/kcore-agent"
      "provision-disk"
    ];
    # The marker lives where the guide mounts the host's state directory.
    Env = [ "MARKER_DIR=/var/lib/kcore" ];
  };
}
