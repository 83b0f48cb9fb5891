import pytest

from goalrm.config import ConfigError, ScoreConfig
from goalrm.score.run import check_shared_paths
from goalrm.train.storage import check_storage, filesystem_type, is_shared

MOUNTS = """\
overlay / overlay rw 0 0
/dev/nvme0n1p1 /scratch ext4 rw 0 0
fs-1.efs:/ /mnt/shared nfs4 rw 0 0
s3fs /mnt/bucket fuse.s3fs rw 0 0
"""


@pytest.fixture
def mounts(tmp_path):
    p = tmp_path / "mounts"
    p.write_text(MOUNTS)
    return str(p)


def test_filesystem_type_takes_the_longest_mount_prefix(mounts):
    assert filesystem_type("/scratch/runs/x", mounts) == "ext4"
    assert filesystem_type("/mnt/shared/runs", mounts) == "nfs4"
    assert filesystem_type("/mnt/sharedother", mounts) == "overlay"  # a name prefix is not a mount prefix
    assert filesystem_type("/mnt/bucket/a", mounts) == "fuse.s3fs"


def test_shared_storage_kinds(mounts):
    assert is_shared("s3://bucket/goalrm", mounts)
    assert is_shared("/mnt/shared/runs", mounts)
    assert is_shared("/mnt/bucket/runs", mounts)
    assert not is_shared("/scratch/runs", mounts)


def test_multi_node_run_on_local_disk_fails_early(mounts):
    with pytest.raises(ConfigError, match=r"'/scratch/runs' is on a node-local filesystem \(ext4\)"):
        check_storage("/scratch/runs", spans_hosts=True, mounts_file=mounts)
    with pytest.raises(ConfigError, match="node-local"):  # a local path spelled as a URI is no more shared
        check_storage("file:///scratch/runs", spans_hosts=True, mounts_file=mounts)
    check_storage("/scratch/runs", spans_hosts=False, mounts_file=mounts)  # one host: local disk is fine
    check_storage("gs://bucket/runs", spans_hosts=True, mounts_file=mounts)


def test_scoring_on_several_hosts_needs_paths_every_node_mounts(mounts):
    """Scorers on other hosts would write their blocks to their own disks, and the summary would not see them."""
    shared = ScoreConfig(model="/mnt/shared/model", input="s3://bucket/in/", output="/mnt/shared/scored")
    check_shared_paths(shared, shared.output, spans_hosts=True, mounts_file=mounts)
    for flag, local in (("--model", {"model": "/scratch/model"}), ("--input", {"input": "/scratch/in.jsonl"}),
                        ("--output", {"output": "/scratch/scored"})):
        cfg = ScoreConfig(**{**vars(shared), **local})
        with pytest.raises(ConfigError, match=f"{flag} /scratch/.* is on a node-local filesystem \\(ext4\\)"):
            check_shared_paths(cfg, cfg.output, spans_hosts=True, mounts_file=mounts)
        check_shared_paths(cfg, cfg.output, spans_hosts=False, mounts_file=mounts)  # one host: its disk is shared
