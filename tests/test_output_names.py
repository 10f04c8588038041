"""Output names from a ``batch`` manifest stay plain GeoTIFF names inside OUTDIR and never replace an input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from asanet_rt.batch import read_manifest
from asanet_rt.errors import AsanetError
from asanet_rt.output_names import MAX_NAME_BYTES, check_output_name


@pytest.mark.parametrize("name, problem", [
    ("../escape.tif", "folder part"),
    ("../../../../etc/cron.d/x.tif", "folder part"),
    ("sub/x.tif", "folder part"),
    ("/tmp/x.tif", "folder part"),
    ("..\\x.tif", "folder part"),
    ("C:x.tif", "folder part"),
    ("..", "starts with '.'"),
    (".done.tif", "starts with '.'"),
    ("", "is empty"),
    ("a\x00.tif", "control characters"),
    ("a\nb.tif", "control characters"),
    ("x" * MAX_NAME_BYTES + ".tif", f"longer than {MAX_NAME_BYTES} bytes"),
    ("map.qml", "does not end in .tif"),
    ("batch_summary.json", "does not end in .tif"),
])
def test_unsafe_output_names_are_refused(name, problem):
    with pytest.raises(AsanetError, match=rf"scenes\.csv: line 2: output .* {problem}.*plain file name") as info:
        check_output_name(name, "scenes.csv: line 2")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["x_landcover.tif", "map 1.tif", "Ünïcode.TIFF", "a..b.tif", "x" * 196 + ".tif"])
def test_plain_names_pass(name):
    check_output_name(name, "m.csv: line 2")


def test_output_replacing_an_input_is_refused(tmp_path: Path):
    (tmp_path / "a.tif").touch()
    (tmp_path / "alias").symlink_to(tmp_path, target_is_directory=True)
    for outdir in (tmp_path, tmp_path / "alias"):
        with pytest.raises(AsanetError, match=r"output 'a\.tif' in OUTDIR is the input .*a\.tif itself"):
            check_output_name("a.tif", "m.csv: line 2", outdir, [str(tmp_path / "a.tif"), "/vsis3/b/s1.tif"])
    check_output_name("a.tif", "m.csv: line 2", tmp_path / "maps", [str(tmp_path / "a.tif")])


def test_manifests_cannot_write_outside_outdir(tmp_path: Path):
    outdir = tmp_path / "maps"
    cases = {
        "up.csv": "optical,sar,output\ns2.tif,s1.tif,../../outside.tif\n",
        "abs.json": json.dumps([{"optical": "s2.tif", "sar": "s1.tif", "output": str(tmp_path / "x.tif")}]),
        "win.json": json.dumps([{"optical": "s2.tif", "sar": "s1.tif", "output": "..\\outside.tif"}]),
        "list.json": json.dumps([{"optical": "s2.tif", "sar": "s1.tif", "output": ["../x.tif"]}]),
        "self.csv": "optical,sar,output\nmaps/s2.tif,s1.tif,s2.tif\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(AsanetError, match=rf"{name}: (line 2|entry 1): output .*(plain file name|itself)"):
            read_manifest(tmp_path / name, outdir)
    (tmp_path / "ok.csv").write_text("optical,sar,output\ns2.tif,s1.tif,\nb/s2.tif,s1.tif,other name.tif\n")
    jobs = read_manifest(tmp_path / "ok.csv", outdir)
    assert [Path(j.output).parent for j in jobs] == [outdir.resolve()] * 2
