"""The streaming tar packer of the build context."""

from __future__ import annotations

import io
import logging
import os
import socket
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootc_builder.context import (
    RESERVED_CONTAINERFILE_NAME,
    ContextArchive,
    _NameList,
)
from bootc_builder.errors import ContainerfileError, ContextError

CONTAINERFILE = "FROM scratch\nCOPY . /ctx/\n"


def make_tree(root: Path, files: dict[str, str]) -> Path:
    """Create ``files`` (path to content) under ``root`` with a Containerfile."""
    root.mkdir(parents=True, exist_ok=True)
    for name, content in {"Containerfile": CONTAINERFILE, **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def pack(archive: ContextArchive) -> bytes:
    return b"".join(archive.chunks())


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8") as tar:
        return {member.name: member for member in tar.getmembers()}


def contents(data: bytes) -> dict[str, bytes]:
    result = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            if member.isfile():
                extracted = tar.extractfile(member)
                assert extracted is not None
                result[member.name] = extracted.read()
    return result


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(
        tmp_path / "ctx",
        {
            "b.txt": "b",
            "a.txt": "a",
            "dir/z": "z",
            "dir/sub/y": "y",
            "dir2/x": "x",
        },
    )


def test_pack_lists_tree_sorted(tree: Path) -> None:
    archive = ContextArchive(tree, tree / "Containerfile")
    data = pack(archive)
    names = list(members(data))
    assert names == [
        "Containerfile",
        "a.txt",
        "b.txt",
        "dir",
        "dir/sub",
        "dir/sub/y",
        "dir/z",
        "dir2",
        "dir2/x",
    ]
    assert contents(data)["dir/sub/y"] == b"y"
    assert archive.containerfile_name == "Containerfile"
    assert archive.ignore_file is None


def test_pack_sorts_by_bytes(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", {"B": "", "a": "", "é": "", "_": ""})
    names = list(members(pack(ContextArchive(root, root / "Containerfile"))))
    assert names == sorted(names, key=lambda name: name.encode())


def test_pack_keeps_mode_and_mtime(tree: Path) -> None:
    (tree / "a.txt").chmod(0o4750)
    os.utime(tree / "a.txt", (1_000_000_000, 1_234_567_890.75))
    (tree / "dir").chmod(0o700)
    found = members(pack(ContextArchive(tree, tree / "Containerfile")))
    assert found["a.txt"].mode == 0o4750
    assert found["a.txt"].mtime == 1_234_567_890
    assert found["dir"].mode == 0o700
    assert found["dir"].isdir()


def test_pack_sets_owner_root(tree: Path) -> None:
    for member in members(pack(ContextArchive(tree, tree / "Containerfile"))).values():
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")


def test_pack_is_reproducible(tree: Path) -> None:
    archive = ContextArchive(tree, tree / "Containerfile")
    first = pack(archive)
    assert pack(archive) == first
    assert pack(ContextArchive(tree, tree / "Containerfile")) == first


def test_chunks_have_requested_size(tree: Path) -> None:
    (tree / "big").write_bytes(os.urandom(5000))
    archive = ContextArchive(tree, tree / "Containerfile", chunk_size=1000)
    chunks = list(archive.chunks())
    assert all(len(chunk) == 1000 for chunk in chunks[:-1])
    assert 0 < len(chunks[-1]) <= 1000
    data = b"".join(chunks)
    assert len(data) % 512 == 0
    assert data.endswith(bytes(1024))
    assert contents(data)["big"] == (tree / "big").read_bytes()


def test_counts_after_packing(tree: Path) -> None:
    archive = ContextArchive(tree, tree / "Containerfile")
    data = pack(archive)
    assert archive.files == 6
    assert archive.bytes == len(data)
    pack(archive)
    assert archive.files == 6


def test_chunk_size_must_be_positive(tree: Path) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        ContextArchive(tree, tree / "Containerfile", chunk_size=0)


def test_long_name_uses_pax(tmp_path: Path) -> None:
    name = "/".join(["d" * 60] * 3) + "/" + "f" * 200
    root = make_tree(tmp_path / "ctx", {name: "long"})
    data = pack(ContextArchive(root, root / "Containerfile"))
    assert contents(data)[name] == b"long"


def test_non_utf8_name_kept(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", {})
    (root / os.fsdecode(b"bad-\xff")).write_text("x")
    data = pack(ContextArchive(root, root / "Containerfile"))
    with tarfile.open(
        fileobj=io.BytesIO(data), encoding="utf-8", errors="surrogateescape"
    ) as tar:
        names = [os.fsencode(name) for name in tar.getnames()]
    assert b"bad-\xff" in names


def test_file_over_8gib_uses_pax_size(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", {})
    with (root / "huge").open("wb") as file:
        file.truncate(9 << 30)
    archive = ContextArchive(root, root / "Containerfile", chunk_size=1 << 16)
    chunks = archive.chunks()
    head = b"".join(next(chunks) for _ in range(2))
    with tarfile.open(fileobj=io.BytesIO(head), mode="r|") as tar:
        first = tar.next()
        assert first is not None
        assert first.name == "Containerfile"
        second = tar.next()
    assert second is not None
    assert second.name == "huge"
    assert second.size == 9 << 30


def test_sparse_file_streams_in_chunks(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", {})
    with (root / "sparse").open("wb") as file:
        file.truncate(64 << 20)
    archive = ContextArchive(root, root / "Containerfile", chunk_size=1 << 20)
    sizes = [len(chunk) for chunk in archive.chunks()]
    assert max(sizes) == 1 << 20
    assert sum(sizes) == archive.bytes
    assert archive.bytes > 64 << 20


# Ignore rules


def test_excluded_paths_left_out(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "ctx",
        {
            ".containerignore": "*.md\n!keep.md\n/build\ndocs\n!docs/README.md\n",
            "top.md": "",
            "keep.md": "",
            "build/out": "",
            "docs/README.md": "",
            "docs/a.md": "",
            "x": "",
        },
    )
    archive = ContextArchive(root, root / "Containerfile")
    names = set(members(pack(archive)))
    assert names == {
        ".containerignore",
        "Containerfile",
        "docs",
        "docs/README.md",
        "keep.md",
        "x",
    }
    assert archive.ignore_file == ".containerignore"


def test_excluded_dir_not_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(
        tmp_path / "ctx",
        {".dockerignore": "skipped\n", "skipped/deep/file": "", "kept/file": ""},
    )
    listed: list[str] = []
    real_scandir = os.scandir

    def spy(path: str) -> Iterator[os.DirEntry[str]]:
        listed.append(os.path.relpath(path, root))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", spy)
    ContextArchive(root, root / "Containerfile")
    assert sorted(listed) == [".", "kept"]


def test_excluded_dir_walked_for_exception(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "ctx",
        {
            ".dockerignore": "**\n!folder1/file1\n",
            "folder1/file1": "",
            "folder1/file2": "",
            "other": "",
        },
    )
    names = set(members(pack(ContextArchive(root, root / "Containerfile"))))
    assert names == {".dockerignore", "Containerfile", "folder1", "folder1/file1"}


def test_ignore_file_sent_when_it_excludes_itself(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "ctx",
        {".containerignore": ".containerignore\nContainerfile\na\n", "a": "", "b": ""},
    )
    data = pack(ContextArchive(root, root / "Containerfile"))
    assert set(members(data)) == {".containerignore", "Containerfile", "b"}
    assert contents(data)[".containerignore"] == b".containerignore\nContainerfile\na\n"


def test_ignore_file_symlink_sent_as_file(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", {"a": "", "b": ""})
    (tmp_path / "rules").write_text("a\n")
    (root / ".containerignore").symlink_to(tmp_path / "rules")
    data = pack(ContextArchive(root, root / "Containerfile"))
    found = members(data)
    assert found[".containerignore"].isfile()
    assert contents(data)[".containerignore"] == b"a\n"
    assert "a" not in found


def test_invalid_ignore_file_raises_early(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", {".dockerignore": "[oops\n"})
    with pytest.raises(ContextError, match=r"line 1 of \.dockerignore"):
        ContextArchive(root, root / "Containerfile")


def test_per_containerfile_ignore_file(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "ctx",
        {
            ".dockerignore": "a\n",
            "ci/Containerfile.containerignore": "b\nci\n",
            "a": "",
            "b": "",
        },
    )
    (root / "ci" / "Containerfile").write_text(CONTAINERFILE)
    archive = ContextArchive(root, root / "ci" / "Containerfile")
    names = set(members(pack(archive)))
    assert archive.ignore_file == "ci/Containerfile.containerignore"
    assert names == {
        ".dockerignore",
        "Containerfile",
        "a",
        "ci",
        "ci/Containerfile",
        "ci/Containerfile.containerignore",
    }


# The Containerfile


def test_containerfile_ignored_still_sent(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "ctx",
        {".dockerignore": "**/Containerfile*\nhack\n", "src/main.go": ""},
    )
    (root / "Containerfile").unlink()
    (root / "hack").mkdir()
    (root / "hack" / "Containerfile").write_text(CONTAINERFILE)
    archive = ContextArchive(root, root / "hack" / "Containerfile")
    data = pack(archive)
    assert archive.containerfile_name == "hack/Containerfile"
    assert set(members(data)) == {
        ".dockerignore",
        "hack",
        "hack/Containerfile",
        "src",
        "src/main.go",
    }
    assert contents(data)["hack/Containerfile"] == CONTAINERFILE.encode()


def test_containerfile_relative_path(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree / "dir")
    archive = ContextArchive(Path(".."), Path("../Containerfile"))
    assert archive.containerfile_name == "Containerfile"


def test_containerfile_outside_gets_reserved_name(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", {".dockerignore": "*.log", "a.log": "", "b": ""})
    (root / "Containerfile").unlink()
    outside = tmp_path / "Containerfile"
    outside.write_text(CONTAINERFILE)
    before = sorted(root.rglob("*"))
    archive = ContextArchive(root, outside)
    data = pack(archive)

    reserved = RESERVED_CONTAINERFILE_NAME
    assert archive.containerfile_name == reserved
    assert archive.ignore_file == ".dockerignore"
    assert list(members(data)) == [
        ".dockerignore",
        "b",
        reserved,
        reserved + ".containerignore",
    ]
    found = contents(data)
    assert found[reserved] == CONTAINERFILE.encode()
    assert found[".dockerignore"] == b"*.log"
    expected_rules = f"*.log\n{reserved}\n{reserved}.containerignore\n"
    assert found[reserved + ".containerignore"] == expected_rules.encode()
    assert sorted(root.rglob("*")) == before


def test_containerfile_outside_without_ignore_file(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", {"a": ""})
    outside = tmp_path / "elsewhere.Containerfile"
    outside.write_text(CONTAINERFILE)
    archive = ContextArchive(root, outside)
    found = contents(pack(archive))
    reserved = RESERVED_CONTAINERFILE_NAME
    assert archive.ignore_file is None
    assert found[reserved + ".containerignore"] == (
        f"{reserved}\n{reserved}.containerignore\n".encode()
    )


def test_containerfile_outside_own_ignore_file(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", {".containerignore": "a\n", "a": "", "b": ""})
    outside = tmp_path / "Containerfile"
    outside.write_text(CONTAINERFILE)
    (tmp_path / "Containerfile.containerignore").write_text("b")
    archive = ContextArchive(root, outside)
    data = pack(archive)
    reserved = RESERVED_CONTAINERFILE_NAME
    assert archive.ignore_file == str(tmp_path / "Containerfile.containerignore")
    assert set(members(data)) == {
        ".containerignore",
        "Containerfile",
        "a",
        reserved,
        reserved + ".containerignore",
    }
    assert contents(data)[reserved + ".containerignore"] == (
        f"b\n{reserved}\n{reserved}.containerignore\n".encode()
    )


def test_reserved_name_avoids_existing(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "ctx",
        {
            RESERVED_CONTAINERFILE_NAME: "",
            ".bootc-build-1.Containerfile.dockerignore": "",
        },
    )
    outside = tmp_path / "Containerfile"
    outside.write_text(CONTAINERFILE)
    archive = ContextArchive(root, outside)
    assert archive.containerfile_name == ".bootc-build-2.Containerfile"


def test_containerfile_symlink_sent_apart(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", {"real/Containerfile": CONTAINERFILE})
    (root / "Containerfile").unlink()
    (root / "Containerfile").symlink_to("real/Containerfile")
    archive = ContextArchive(root, root / "Containerfile")
    data = pack(archive)
    assert archive.containerfile_name == RESERVED_CONTAINERFILE_NAME
    assert members(data)["Containerfile"].issym()
    assert contents(data)[RESERVED_CONTAINERFILE_NAME] == CONTAINERFILE.encode()


def test_context_through_symlink(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "real", {"a": ""})
    (tmp_path / "link").symlink_to(root)
    archive = ContextArchive(tmp_path / "link", tmp_path / "link" / "Containerfile")
    assert archive.containerfile_name == "Containerfile"
    assert set(members(pack(archive))) == {"Containerfile", "a"}


# Kinds of entries


def test_symlinks_kept_not_followed(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", {"dir/file": "f", "real": "r"})
    (root / "to-dir").symlink_to("dir")
    (root / "to-file").symlink_to("real")
    (root / "absolute").symlink_to("/etc/passwd")
    (root / "dangling").symlink_to("missing")
    (root / "dir" / "up").symlink_to("../real")
    found = members(pack(ContextArchive(root, root / "Containerfile")))
    assert found["to-dir"].issym()
    assert found["to-dir"].linkname == "dir"
    assert found["absolute"].linkname == "/etc/passwd"
    assert found["dangling"].linkname == "missing"
    assert found["dir/up"].linkname == "../real"
    assert "to-dir/file" not in found


@pytest.mark.parametrize(
    ("link", "target"), [("out", ".."), ("out", "../x"), ("dir/out", "../../x")]
)
def test_symlink_escaping_context_raises(
    tmp_path: Path, link: str, target: str
) -> None:
    root = make_tree(tmp_path / "ctx", {"dir/file": ""})
    (root / link).symlink_to(target)
    with pytest.raises(ContextError, match=f"symbolic link '{link}'"):
        ContextArchive(root, root / "Containerfile")


def test_symlink_escaping_context_ignored(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", {".containerignore": "out\n"})
    (root / "out").symlink_to("../x")
    names = set(members(pack(ContextArchive(root, root / "Containerfile"))))
    assert names == {".containerignore", "Containerfile"}


def test_hard_links_sent_as_links(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", {"a": "data", ".containerignore": "c\n"})
    os.link(root / "a", root / "b")
    os.link(root / "a", root / "c")
    data = pack(ContextArchive(root, root / "Containerfile"))
    found = members(data)
    assert found["a"].isfile()
    assert found["b"].islnk()
    assert found["b"].linkname == "a"
    assert "c" not in found
    assert contents(data)["a"] == b"data"


def test_fifo_sent_socket_skipped(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", {})
    os.mkfifo(root / "pipe")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(root / "sock"))
        archive = ContextArchive(root, root / "Containerfile")
        found = members(pack(archive))
    finally:
        server.close()
    assert found["pipe"].isfifo()
    assert "sock" not in found


# Errors


def test_missing_context(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="does not exist"):
        ContextArchive(tmp_path / "nope", tmp_path / "Containerfile")


def test_context_not_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ContextError, match="is not a directory"):
        ContextArchive(tmp_path / "file", tmp_path / "file")


def test_missing_containerfile(tree: Path) -> None:
    with pytest.raises(ContainerfileError, match="not found"):
        ContextArchive(tree, tree / "Nope")


def test_containerfile_is_directory(tree: Path) -> None:
    with pytest.raises(ContainerfileError, match="not a regular file"):
        ContextArchive(tree, tree / "dir")


def test_unlistable_directory_named(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_scandir = os.scandir

    def refuse(path: str) -> Iterator[os.DirEntry[str]]:
        if path.endswith("/dir/sub"):
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)
    with pytest.raises(ContextError, match=r"'dir/sub'.*Permission denied"):
        ContextArchive(tree, tree / "Containerfile")


def test_unreadable_file_named_before_sending(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        os, "access", lambda path, mode: not str(path).endswith("a.txt")
    )
    with pytest.raises(ContextError, match=r"'a\.txt'.*Permission denied"):
        ContextArchive(tree, tree / "Containerfile")


def test_unreadable_file_while_packing(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = ContextArchive(tree, tree / "Containerfile")
    real_open = os.open

    def refuse(path: str, flags: int, mode: int = 0o777) -> int:
        if path.endswith("dir/z"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(ContextError, match=r"'dir/z'.*Permission denied"):
        pack(archive)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_real_permissions(tree: Path) -> None:
    (tree / "a.txt").chmod(0)
    with pytest.raises(ContextError, match=r"'a\.txt'"):
        ContextArchive(tree, tree / "Containerfile")


def test_unreadable_excluded_file_ignored(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tree / ".containerignore").write_text("a.txt\n")
    monkeypatch.setattr(
        os, "access", lambda path, mode: not str(path).endswith("a.txt")
    )
    assert "a.txt" not in members(pack(ContextArchive(tree, tree / "Containerfile")))


def test_file_shrinking_while_packing(tree: Path) -> None:
    (tree / "big").write_bytes(bytes(10_000))
    archive = ContextArchive(tree, tree / "Containerfile", chunk_size=512)
    chunks = archive.chunks()
    # With 512-byte chunks the header of "big" is a chunk of its own, and the
    # file is open once it has been yielded.
    while not next(chunks).startswith(b"big\0"):
        pass
    (tree / "big").write_bytes(b"")
    with pytest.raises(ContextError, match="'big' in the build context shrank"):
        list(chunks)


def test_file_growing_while_packing_keeps_size(tree: Path) -> None:
    (tree / "big").write_bytes(b"1" * 1000)
    archive = ContextArchive(tree, tree / "Containerfile", chunk_size=512)
    chunks = archive.chunks()
    sent: list[bytes] = []
    while not sent or not sent[-1].startswith(b"big\0"):
        sent.append(next(chunks))
    with (tree / "big").open("ab") as file:
        file.write(b"2" * 1000)
    data = b"".join(sent) + b"".join(chunks)
    assert contents(data)["big"] == b"1" * 1000


def test_file_vanishing_while_packing(
    tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    archive = ContextArchive(tree, tree / "Containerfile")
    (tree / "dir2" / "x").unlink()
    with caplog.at_level(logging.WARNING, logger="bootc_builder.context"):
        names = set(members(pack(archive)))
    assert "dir2/x" not in names
    assert "dir2" in names
    assert "dir2/x" in caplog.text


def test_file_replaced_by_fifo_while_packing(tree: Path) -> None:
    archive = ContextArchive(tree, tree / "Containerfile")
    (tree / "b.txt").unlink()
    os.mkfifo(tree / "b.txt")
    data = pack(archive)
    assert members(data)["b.txt"].isfifo()


def test_file_replaced_by_symlink_not_followed(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = ContextArchive(tree, tree / "Containerfile")
    real_lstat = os.lstat

    def stale_lstat(path: str) -> os.stat_result:
        # Reports the regular file seen by the walk, then the link is opened.
        result = real_lstat(path)
        if path.endswith("b.txt"):
            return real_lstat(tree / "a.txt")
        return result

    (tree / "b.txt").unlink()
    (tree / "b.txt").symlink_to("/etc/passwd")
    monkeypatch.setattr(os, "lstat", stale_lstat)
    with pytest.raises(ContextError, match=r"'b\.txt'"):
        pack(archive)


def test_mode_bits_of_regular_file(tree: Path) -> None:
    (tree / "a.txt").chmod(0o755)
    found = members(pack(ContextArchive(tree, tree / "Containerfile")))
    assert stat.S_IMODE(found["a.txt"].mode) == 0o755


def test_name_list_gives_back_every_name_in_order() -> None:
    # Names that are not valid UTF-8 arrive from os.scandir with surrogate escapes.
    names = ["a", "dir/b c", "caf\udce9", "ü/ß", "", "x" * 300, "dir/a"]
    packed = _NameList()
    for name in names:
        packed.append(name)

    assert len(packed) == len(names)
    assert list(packed) == names
    assert list(packed) == names
