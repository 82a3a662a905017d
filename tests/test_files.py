"""Checkpoints and files a hostile or damaged folder can hold: compressed entries that inflate far
beyond their file (zip bombs), merely large metadata, member names that leave the folder, and a
lock file that is not a file (minialex/io.py, minialex/runfolder.py)."""
import os
import threading
import tracemalloc
import zipfile

import numpy as np
import pytest

import minialex as ma
from minialex import io
from minialex.runfolder import LOCK, FolderError, RunFolder


def write_member(archive, name, dtype, shape, fill=0):
    """A .npy member of `shape` written in 1 MiB pieces (the array itself never exists in memory)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    with archive.open(name + ".npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_2_0(f, header)
        piece = bytes([fill]) * (1 << 20)
        for start in range(0, nbytes, len(piece)):
            f.write(piece[:nbytes - start])


def peak_while(fn):
    """(what fn raised or returned, the peak bytes traced while it ran: NumPy's arrays included)."""
    tracemalloc.start()
    try:
        try:
            result = fn()
        except Exception as e:   # noqa: BLE001 - returned for the test to look at
            result = e
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_compressed_entry_that_inflates_far_beyond_its_file_is_refused_before_inflating(tmp_path):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        write_member(archive, "meta/format", "<i8", ())
        write_member(archive, "model/fc6.weight", "<f4", (64, 1 << 18))          # 64 MiB of zeros
    assert path.stat().st_size < 200_000
    result, peak = peak_while(lambda: ma.load(path))
    assert isinstance(result, ValueError), result
    assert "model/fc6.weight is compressed" in str(result) and "max_inflation=32" in str(result)
    assert peak < 8 << 20, f"{peak} bytes traced: the entry was inflated"
    result, peak = peak_while(lambda: io.load(path, keys=["model/fc6.weight"]))     # asked for by name too
    assert isinstance(result, ValueError) and peak < 8 << 20
    assert int(io.load(path, keys=["meta/format"])["meta/format"]) == 0             # the small entry alone is fine
    assert io.load(path, max_inflation=None)["model/fc6.weight"].shape == (64, 1 << 18)   # a file you trust


def test_many_small_compressed_entries_count_together(tmp_path):
    path = tmp_path / "many.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for k in range(48):
            write_member(archive, f"optim/velocity.{k}", "<f4", (1 << 18,))         # 1 MiB each, about 1 KiB stored
    with pytest.raises(ValueError, match=rf"compressed entries read would take {48 * ((1 << 20) + 128)} bytes"):
        ma.load(path)


def test_compressed_entries_of_ordinary_ratios_still_load(tmp_path):
    path = tmp_path / "ok.npz"
    w = np.random.default_rng(0).standard_normal((300, 200)).astype(np.float32)
    np.savez_compressed(path, w=w, b=np.zeros(3, np.float32), text=np.array("{}"))
    back = ma.load(path)
    np.testing.assert_array_equal(back["w"], w)
    assert back["text"].item() == "{}" and back["b"].tolist() == [0.0, 0.0, 0.0]


def test_limits_refuse_an_entry_larger_than_its_kind_needs_before_reading_it(tmp_path):
    path = tmp_path / "big-meta.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        write_member(archive, "meta/config", "<U1", (8 << 20,), fill=0)            # 32 MiB of "settings"
        write_member(archive, "meta/epoch", "<i8", ())
        write_member(archive, "model/w", "<f4", (1 << 20,))
    limits = {"meta/": 65536, "meta/config": 1 << 20}
    result, peak = peak_while(lambda: io.load(path, limits=limits))
    assert isinstance(result, ValueError) and peak < 4 << 20
    assert str(result) == (f"load: {path}: meta/config holds {32 << 20} bytes, more than the 1048576 "
                           f"bytes this entry may have")
    arrays = io.load(path, keys=["meta/epoch", "model/w"], limits=limits)        # others keep their limits
    assert arrays["model/w"].shape == (1 << 20,)
    with pytest.raises(ValueError, match="model/w holds 4194304 bytes, more than the 1000 bytes"):
        io.load(path, keys=["model/w"], limits={"model/": 1000})
    with pytest.raises(ValueError, match="meta/epoch holds 8 bytes, more than the 4 bytes"):   # from the header
        io.load(path, keys=["meta/epoch"], limits={"meta/epoch": 4})


def test_a_member_that_ends_early_is_damaged_not_a_crash(tmp_path):
    path = tmp_path / "short.npz"
    ma.save({"w": np.arange(1000.0)}, path)
    data = bytearray(path.read_bytes())
    cut = data.index(b"PK\x01\x02")                    # the central directory follows the member's bytes
    member = bytes(data[:cut])
    with zipfile.ZipFile(path) as archive:
        start = archive.getinfo("w.npy").header_offset
    damaged = member[:start] + member[start:start + 400] + bytes(len(member) - start - 400) + bytes(data[cut:])
    path.write_bytes(damaged)                          # the array's bytes zeroed: the CRC disagrees
    with pytest.raises(ValueError, match="damaged"):
        ma.load(path)


@pytest.mark.parametrize("name", ["../../x", "/etc/x", "a//b", "a/", "./a", "a/../b", "a b", "a\\b", "x\x00",
                                  "é", "", "a/./b", "~/x:y"])
def test_save_refuses_names_that_are_not_plain_keys(tmp_path, name):
    with pytest.raises(ValueError, match=r"save: names expected plain keys: slash-separated segments of letters, "
                                         r"digits and _ \. # - \(not '\.' or '\.\.'\)"):
        ma.save({name: np.zeros(2)}, tmp_path / "x.npz")
    assert list(tmp_path.iterdir()) == []              # nothing written, not even a temporary file


def test_save_takes_the_library_s_own_names(tmp_path):
    names = ["model/conv1.weight", "meta/config", "optim/velocity.0", "0.weight", "fc6.bias", "a-b#2/_c.d",
             "x.npy", "..a", "a..", "meta/interrupted_in_epoch"]
    arrays = {n: np.full(2, k, np.float32) for k, n in enumerate(names)}
    ma.save(arrays, tmp_path / "ok.npz")
    back = ma.load(tmp_path / "ok.npz")
    assert list(back) == names and all(np.array_equal(back[n], arrays[n]) for n in names)
    with zipfile.ZipFile(tmp_path / "ok.npz") as archive:
        assert all(".." not in m.split("/") and not m.startswith("/") for m in archive.namelist())
    with pytest.raises(TypeError, match="save: names expected strings, got 3"):
        ma.save({3: np.zeros(1)}, tmp_path / "int.npz")
    with pytest.raises(ValueError, match="at most 1000 characters"):
        ma.save({"a" * 1001: np.zeros(1)}, tmp_path / "long.npz")


def lock_in_thread(folder):
    """(FolderError or None, whether lock() returned within 5 s): a lock() that hangs must not hang the tests."""
    outcome = {}

    def take():
        try:
            RunFolder(folder).lock()
            outcome["error"] = None
        except FolderError as e:
            outcome["error"] = e
    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():                              # blocked opening the FIFO: give it a writer to end
        fd = os.open(folder / LOCK, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        thread.join(5)
        return outcome.get("error"), False
    return outcome.get("error"), True


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_lock_that_is_a_fifo_is_refused_at_once(tmp_path):
    os.mkfifo(tmp_path / LOCK)
    error, returned = lock_in_thread(tmp_path)
    assert returned, "lock() waited on the FIFO"
    assert str(error) == (f"{tmp_path / LOCK} is a FIFO (named pipe), not a regular file, so not a lock file: "
                          f"remove it (minialex-train makes its own), or choose another --out")
    assert [p.name for p in tmp_path.iterdir()] == [LOCK]          # the staged lock cleaned up


def test_a_lock_that_is_a_folder_or_a_link_is_refused(tmp_path):
    (tmp_path / LOCK).mkdir()
    with pytest.raises(FolderError, match=r"\.minialex-train\.lock is a folder, not a regular file"):
        RunFolder(tmp_path).lock()
    (tmp_path / LOCK).rmdir()
    (tmp_path / "elsewhere").write_text('{"pid": 1, "host": "x"}')
    (tmp_path / LOCK).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FolderError, match="is a symbolic link, not a lock file"):
        RunFolder(tmp_path).lock()


def test_a_dead_run_s_lock_is_still_taken_over(tmp_path):
    (tmp_path / LOCK).write_text('{"pid": 2147483646, "host": "%s"}' % os.uname().nodename)
    folder = RunFolder(tmp_path)
    folder.lock()
    assert folder.locked
    folder.unlock()


def test_save_and_load_name_their_wrong_arguments(tmp_path):
    with pytest.raises(TypeError, match=r"save: state_dict expected a mapping \{name: array\}, got list"):
        ma.save([np.zeros(2)], tmp_path / "x.npz")
    ma.save({"w": ma.Tensor([1.0, 2.0], requires_grad=True)}, tmp_path / "t.npz")      # a Tensor's values
    assert ma.load(tmp_path / "t.npz")["w"].tolist() == [1.0, 2.0]
    with pytest.raises(TypeError, match=r"load: keys expected an iterable of names \(\['meta/epoch'\] for one\), "
                                        r"got 'w'"):
        io.load(tmp_path / "t.npz", keys="w")                # not the names "w" read letter by letter
    with pytest.raises(TypeError, match="load: limits expected a mapping"):
        io.load(tmp_path / "t.npz", limits={"w": -1})
    with pytest.raises(ValueError, match="load: max_inflation expected a number >= 1 or None, got 0"):
        io.load(tmp_path / "t.npz", max_inflation=0)
