"""``lrfr import-config``: real arcface_torch configs -> recipe dicts; untrusted files are parsed, never executed."""

from __future__ import annotations

import pathlib
import textwrap

import pytest
import yaml
from conftest import run_lrfr

from lrfr_plugins.import_config import BASE_DEFAULTS, ImportConfigError, import_config, parse_config

# Verbatim texts of deepinsight/insightface recognition/arcface_torch/configs/*.py (the comment block shortened).
HEADER = """\
from easydict import EasyDict as edict

# make training faster
# our RAM is 256G
# mount -t tmpfs -o size=140G  tmpfs /train_tmp

config = edict()
"""

BASE_PY = HEADER + """
# Margin Base Softmax
config.margin_list = (1.0, 0.5, 0.0)
config.network = "r50"
config.resume = False
config.save_all_states = False
config.output = "ms1mv3_arcface_r50"

config.embedding_size = 512

# Partial FC
config.sample_rate = 1
config.interclass_filtering_threshold = 0

config.fp16 = False
config.batch_size = 128

# For SGD 
config.optimizer = "sgd"
config.lr = 0.1
config.momentum = 0.9
config.weight_decay = 5e-4

# For AdamW
# config.optimizer = "adamw"
# config.lr = 0.001
# config.weight_decay = 0.1

config.verbose = 2000
config.frequent = 10

# For Large Sacle Dataset, such as WebFace42M
config.dali = False 

# Gradient ACC
config.gradient_acc = 1

# setup seed
config.seed = 2048

# dataload numworkers
config.num_workers = 2
"""

MS1MV3_R50 = HEADER + """config.margin_list = (1.0, 0.5, 0.0)
config.network = "r50"
config.resume = False
config.output = None
config.embedding_size = 512
config.sample_rate = 1.0
config.fp16 = True
config.momentum = 0.9
config.weight_decay = 5e-4
config.batch_size = 128
config.lr = 0.2
config.verbose = 2000
config.dali = False

config.rec = "/train_tmp/ms1m-retinaface-t1"
config.num_classes = 93431
config.num_image = 5179510
config.num_epoch = 25
config.warmup_epoch = 2
config.val_targets = ['lfw', 'cfp_fp', "agedb_30"]
"""

GLINT360K_R100 = HEADER + """config.margin_list = (1.0, 0.0, 0.4)
config.network = "r100"
config.resume = False
config.output = None
config.embedding_size = 512
config.sample_rate = 1.0
config.fp16 = True
config.momentum = 0.9
config.weight_decay = 1e-4
config.batch_size = 128
config.lr = 0.1
config.verbose = 2000
config.dali = False

config.rec = "/train_tmp/glint360k"
config.num_classes = 360232
config.num_image = 17091657
config.num_epoch = 20
config.warmup_epoch = 0
config.val_targets = ['lfw', 'cfp_fp', "agedb_30"]
"""

# wf42m_pfc03_40epoch_8gpu_vit_b.py (AdamW, '//' arithmetic on an earlier field).
WF42M_VIT_B = HEADER + """config.margin_list = (1.0, 0.0, 0.4)
config.network = "vit_b_dp005_mask_005"
config.resume = False
config.output = None
config.embedding_size = 512
config.sample_rate = 0.3
config.fp16 = True
config.weight_decay = 0.1
config.batch_size = 256
config.gradient_acc = 12 # total batchsize is 256 * 12
config.optimizer = "adamw"
config.lr = 0.001
config.verbose = 2000
config.dali = False

config.rec = "/train_tmp/WebFace42M"
config.num_classes = 2059906
config.num_image = 42474557
config.num_epoch = 40
config.warmup_epoch = config.num_epoch // 10
config.val_targets = []
"""

# The same with a supported network (r100) and no gradient accumulation.
WF42M_R100_WARMUP = WF42M_VIT_B.replace('"vit_b_dp005_mask_005"', '"r100"').replace(
    "config.gradient_acc = 12 # total batchsize is 256 * 12\n", "")

# An old ms1mv3_mbf.py (2021): 'loss' instead of margin_list, warmup_epoch -1, decay_epoch.
MS1MV3_MBF_OLD = HEADER + """config.loss = "arcface"
config.network = "mbf"
config.resume = False
config.output = None
config.embedding_size = 256
config.sample_rate = 1.0
config.fp16 = True
config.momentum = 0.9
config.weight_decay = 2e-4
config.batch_size = 128
config.lr = 0.1  # batch size is 512

config.rec = "/train_tmp/ms1m-retinaface-t1"
config.num_classes = 93431
config.num_image = 5179510
config.num_epoch = 30
config.warmup_epoch = -1
config.decay_epoch = [10, 20, 25]
config.val_targets = ["lfw", "cfp_fp", "agedb_30"]
"""


def write(tmp_path: pathlib.Path, name: str, text: str) -> pathlib.Path:
    path = tmp_path / "configs" / f"{name}.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def convert(tmp_path, name, text, **kw):
    out, warnings = import_config(write(tmp_path, name, text), **kw)
    return yaml.safe_load(out), out, warnings


BINS = ["lfw", "cfp_fp", "agedb_30"]


def test_ms1mv3_r50(tmp_path):
    recipe, text, warnings = convert(tmp_path, "ms1mv3_r50", MS1MV3_R50)
    assert warnings == []
    assert recipe == {
        "lrfr": 1, "name": "ms1mv3_r50", "seed": 2048,
        "data": {"name": "insightface-rec", "params": {"root": "/train_tmp/ms1m-retinaface-t1"}},
        "backbone": {"name": "iresnet50", "params": {"embedding_size": 512, "dropout": 0.0}},
        "head": {"name": "arcface", "params": {"scale": 64.0, "margin": 0.5, "fallback": "none",
                                               "gradient": "detached"}},
        "degradations": [],
        "train": {"epochs": 25, "batch_size": 128,
                  "optimizer": {"name": "sgd", "lr": 0.2, "momentum": 0.9, "weight_decay": 5e-4},
                  "schedule": "polynomial", "warmup_steps": 5179510 // (128 * 8) * 2, "sample_rate": 1.0,
                  "amp": "fp16", "hflip": 0.5, "grad_clip": 5.0, "num_workers": 2},
        "eval": [{"name": "bin", "params": {"path": f"/train_tmp/ms1m-retinaface-t1/{t}.bin",
                                            "preset": "insightface"}} for t in BINS],
    }
    assert recipe["train"]["warmup_steps"] == 10116
    head = text.split("\nlrfr: 1\n")[0]
    assert all(line.startswith("#") for line in head.splitlines())
    assert "ms1mv3_r50.py" in head and "world_size 8" in head and "num_classes 93431" in head


def test_world_size_changes_warmup(tmp_path):
    recipe, _, _ = convert(tmp_path, "ms1mv3_r50", MS1MV3_R50, world_size=1)
    assert recipe["train"]["warmup_steps"] == 5179510 // 128 * 2


def test_glint360k_r100_is_cosface(tmp_path):
    recipe, _, _ = convert(tmp_path, "glint360k_r100", GLINT360K_R100)
    assert recipe["head"] == {"name": "cosface", "params": {"scale": 64.0, "margin": 0.4}}
    assert recipe["backbone"]["name"] == "iresnet100"
    assert recipe["train"]["optimizer"]["weight_decay"] == 1e-4
    assert recipe["train"]["warmup_steps"] == 0
    assert recipe["data"]["params"]["root"] == "/train_tmp/glint360k"


def test_floor_division_on_an_earlier_field(tmp_path):
    recipe, _, _ = convert(tmp_path, "wf42m_pfc03_40epoch_8gpu_r100", WF42M_R100_WARMUP)
    train = recipe["train"]
    assert train["epochs"] == 40
    assert train["warmup_steps"] == 42474557 // (256 * 8) * 4  # warmup_epoch = 40 // 10
    assert train["optimizer"] == {"name": "adamw", "lr": 0.001, "weight_decay": 0.1}
    assert train["sample_rate"] == 0.3
    assert recipe["eval"] == []


def test_vit_network_is_refused_with_the_supported_list(tmp_path):
    with pytest.raises(ImportConfigError) as exc:
        convert(tmp_path, "wf42m_vit_b", WF42M_VIT_B)
    msg = str(exc.value)
    assert "wf42m_vit_b.py:9" in msg and "vit_b_dp005_mask_005" in msg
    assert "r18 -> iresnet18" in msg and "mbf -> mobilefacenet" in msg


def test_gradient_acc_is_reported(tmp_path):
    text = WF42M_VIT_B.replace('"vit_b_dp005_mask_005"', '"r50"')
    _, out, warnings = convert(tmp_path, "wf42m_r50", text)
    assert any("gradient_acc 12" in w for w in warnings) and "gradient_acc 12" in out


def test_base_py_alone_needs_rec(tmp_path):
    fields, _ = parse_config(BASE_PY)
    assert {k: fields[k] for k in BASE_DEFAULTS} == BASE_DEFAULTS  # the hard-coded defaults match base.py
    with pytest.raises(ImportConfigError, match="config.rec"):
        convert(tmp_path, "base", BASE_PY)


def test_base_style_config_with_job_fields(tmp_path):
    text = BASE_PY + textwrap.dedent("""
        config.rec = "/data/faces_webface_112x112"
        config.num_classes = 10575
        config.num_image = 494414
        config.num_epoch = 20
        config.warmup_epoch = 0
        config.val_targets = ['lfw']
        """)
    recipe, out, warnings = convert(tmp_path, "casia_r50", text)
    assert recipe["train"]["amp"] == "none" and recipe["seed"] == 2048
    assert recipe["train"]["optimizer"] == {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}
    assert recipe["eval"] == [{"name": "bin", "params": {"path": "/data/faces_webface_112x112/lfw.bin",
                                                         "preset": "insightface"}}]
    assert any("10572/490623" in w for w in warnings) and "WARNING" in out


def test_defaults_come_from_base_py(tmp_path):
    text = HEADER + 'config.rec = "/r"\nconfig.num_epoch = 1\nconfig.margin_list = (1.0, 0.3, 0.2)\n'
    recipe, _, warnings = convert(tmp_path, "minimal", text)
    assert recipe["backbone"] == {"name": "iresnet50", "params": {"embedding_size": 512, "dropout": 0.0}}
    assert recipe["train"]["batch_size"] == 128 and recipe["train"]["num_workers"] == 2
    assert recipe["head"] == {"name": "combined", "params": {"scale": 64.0, "m1": 1.0, "m2": 0.3, "m3": 0.2}}
    assert any("CosFace with margin 0.2" in w for w in warnings)


def test_old_mbf_config(tmp_path):
    recipe, out, _ = convert(tmp_path, "ms1mv3_mbf", MS1MV3_MBF_OLD)
    assert recipe["backbone"] == {"name": "mobilefacenet", "params": {"embedding_size": 256}}
    assert recipe["head"]["name"] == "arcface"  # base.py's margin_list; 'loss' is ignored as arcface_torch does
    assert recipe["train"]["warmup_steps"] == 0  # warmup_epoch -1
    assert "decay_epoch" in out and "loss 'arcface'" in out


def test_momentum_is_hard_coded(tmp_path):
    recipe, _, warnings = convert(tmp_path, "m", MS1MV3_R50.replace("config.momentum = 0.9", "config.momentum = 0.5"))
    assert recipe["train"]["optimizer"]["momentum"] == 0.9
    assert any("momentum 0.5" in w for w in warnings)


@pytest.mark.parametrize("line, construct", [
    ("config.lr = __import__('os').system('touch {marker}')", "function call"),
    ("__import__('os').system('touch {marker}')", "function call"),
    ("import os\nos.system('touch {marker}')", "function call"),
    ("config.lr = float('0.1')", "function call 'float(...)'"),
    ("config.rec = os.environ", "attribute access 'os.environ'"),
    ("config.lr = lr", "the name 'lr'"),
    ("config.lr = (lambda: 0.1)()", "function call"),
    ("config.val_targets = [t for t in 'ab']", "list comprehension"),
    ("config.lr = config.margin_list[1]", "subscript"),
    ("config.rec = f'{{config.rec}}'", "f-string"),
    ("def f():\n    pass\n", "function definition"),
    ("x = 1", "assignment target the name 'x'"),
    ("config.lr = 0.1 if True else 0.2", "conditional expression"),
    ("config.lr = 10 ** 10 ** 10", "exponent too large"),
    ("config.num_epoch = 20\nconfig.warmup_epoch = config.nun_epoch // 10", "config.nun_epoch is used before"),
])
def test_untrusted_constructs_are_refused_with_file_and_line(tmp_path, line, construct):
    marker = tmp_path / "PWNED"
    text = MS1MV3_R50 + line.format(marker=marker) + "\n"
    bad_line = len(MS1MV3_R50.splitlines()) + line.rstrip("\n").count("\n") + 1
    if line.startswith("def "):
        bad_line = len(MS1MV3_R50.splitlines()) + 1  # the statement's first line
    with pytest.raises(ImportConfigError) as exc:
        convert(tmp_path, "evil", text)
    msg = str(exc.value)
    assert f"evil.py:{bad_line}:" in msg, msg
    assert construct in msg, msg
    assert not marker.exists()


def test_syntax_error_names_the_line(tmp_path):
    with pytest.raises(ImportConfigError, match=r"bad\.py:8: not valid Python"):
        convert(tmp_path, "bad", HEADER + "config.lr = (\n")


def test_cli_prints_the_recipe_and_refuses_malicious_files(tmp_path):
    good = write(tmp_path, "ms1mv3_r50", MS1MV3_R50)
    result = run_lrfr("import-config", str(good), "--world-size", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    recipe = yaml.safe_load(result.stdout)
    assert recipe["train"]["warmup_steps"] == 5179510 // (128 * 4) * 2
    assert result.stdout.startswith("# Imported by 'lrfr import-config'")

    marker = tmp_path / "PWNED"
    evil = write(tmp_path, "evil", f"import os\nconfig = edict()\nos.system('touch {marker}')\n")
    result = run_lrfr("import-config", str(evil), cwd=tmp_path)
    assert result.returncode == 1
    assert "evil.py:3:" in result.stderr and "function call 'os.system(...)'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()

    result = run_lrfr("import-config", str(write(tmp_path, "v", WF42M_VIT_B)), cwd=tmp_path)
    assert result.returncode == 1 and "has no lrfr backbone" in result.stderr


def test_base_recipe_writes_only_differences(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(textwrap.dedent("""\
        lrfr: 1
        name: base
        data: {name: insightface-rec, params: {root: /data/x}}
        backbone: {name: iresnet50, params: {embedding_size: 512, dropout: 0.4}}
        head: {name: arcface, params: {scale: 64.0, margin: 0.5, fallback: none, gradient: detached}}
        train: {epochs: 25, batch_size: 128, num_workers: 2, milestones: [5]}
        """))
    recipe, text, _ = convert(tmp_path, "ms1mv3_r50", MS1MV3_R50, base=str(base))
    assert recipe["extends"] == str(base)
    assert "head" not in recipe
    assert recipe["backbone"] == {"params": {"dropout": 0.0}}
    assert "epochs" not in recipe["train"] and recipe["train"]["schedule"] == "polynomial"
    assert "train.milestones" in text  # inherited keys are listed


def test_imported_recipe_validates(tmp_path):
    out, _ = import_config(write(tmp_path, "ms1mv3_r50", MS1MV3_R50))
    path = tmp_path / "my.yaml"
    path.write_text(out)
    result = run_lrfr("validate", "-q", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
