"""Where Ray Train keeps checkpoints, and a check that a multi-node run can reach them from every node."""

import os

from goalrm.config import ConfigError

# Filesystems that every node of a cluster can mount; fuse covers s3fs, gcsfuse, blobfuse and the like.
SHARED_FS = {"nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "ceph", "glusterfs", "beegfs", "wekafs", "9p", "fuse"}


def is_uri(path: str) -> bool:
    return "://" in path


def filesystem_type(path: str, mounts_file: str = "/proc/mounts") -> str:
    """The type of the filesystem holding PATH (or its nearest existing parent), from the mount table."""
    path = os.path.realpath(path)
    best, best_type = "", "unknown"
    try:
        with open(mounts_file) as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount, fstype = fields[1], fields[2]
                inside = path == mount or path.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best):
                    best, best_type = mount, fstype
    except OSError:
        pass
    return best_type


def is_shared(path: str, mounts_file: str = "/proc/mounts") -> bool:
    if path.startswith("file://"):  # a local path spelled as a URI is as node-local as the path
        path = path[len("file://") :]
    elif is_uri(path):
        return True
    return filesystem_type(path, mounts_file).split(".")[0] in SHARED_FS


def check_storage(path: str, spans_hosts: bool, mounts_file: str = "/proc/mounts") -> None:
    """Fail before training when checkpoints written on one host could not be read on another."""
    if spans_hosts and not is_shared(path, mounts_file):
        fstype = filesystem_type(path, mounts_file)
        raise ConfigError(
            f"train.storage_path {path!r} is on a node-local filesystem ({fstype}), but this run's workers "
            "can land on several nodes, which then could not read each other's checkpoints. "
            "Use a cloud URI (s3://bucket/prefix, gs://...) or a filesystem every node mounts (NFS, Lustre, ...)."
        )


def holds_run(storage_path: str, name: str) -> bool:
    """Whether STORAGE_PATH (a folder or a URI) has a Ray Train run called NAME, which Ray Train would
    continue instead of starting a new one."""
    import pyarrow.fs

    if is_uri(storage_path):
        fs, root = pyarrow.fs.FileSystem.from_uri(storage_path)
    else:
        fs, root = pyarrow.fs.LocalFileSystem(), os.path.abspath(storage_path)
    return fs.get_file_info(f"{root.rstrip('/')}/{name}").type != pyarrow.fs.FileType.NotFound


def run_may_span_hosts(num_workers: int, resources_per_worker: dict) -> bool:
    """True unless every node of the cluster is on this one host (several raylets of one machine share its
    filesystem) and the host alone can place every worker."""
    import ray

    if spans_hosts():
        return True
    nodes = [n for n in ray.nodes() if n["Alive"]]
    have = {}
    for n in nodes:
        for k, v in n["Resources"].items():
            have[k] = have.get(k, 0) + v
    return any(have.get(k, 0) < v * num_workers for k, v in resources_per_worker.items())


def spans_hosts() -> bool:
    """Whether the joined Ray cluster has nodes on more than one host."""
    import ray

    return len({n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}) > 1
