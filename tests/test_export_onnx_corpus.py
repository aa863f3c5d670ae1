"""Hand-made ONNX models (onnx.helper) with the leaks a converter other than tf2onnx can write:
a Dropout left in training mode, and random ops hidden in model-local functions. Each must be a
finding of ``inspect`` (library and CLI) and of verify's structure check, naming the node."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tfdropblock import cli
from tfdropblock.export import inspect
from tfdropblock.export.checks.rules import structure_check
from tfdropblock.export.formats.onnx.reader import onnx_graph

OPSET = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
X = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])


def _bool(name, value):
    return helper.make_tensor(name, TensorProto.BOOL, [], [value])


def _model(nodes, inputs=(), initializers=(), functions=()):
    graph = helper.make_graph(nodes, "corpus", [X, *inputs], [Y], initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=OPSET, functions=list(functions),
                              ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def _dropout(mode_input):
    return helper.make_node("Dropout", ["x", "ratio", mode_input], ["y"], name="the_dropout")


RATIO = helper.make_tensor("ratio", TensorProto.FLOAT, [], [0.5])


def dropout_mode_graph_input():
    mode = helper.make_tensor_value_info("training", TensorProto.BOOL, [])
    return _model([_dropout("training")], [mode], [RATIO])


def dropout_mode_constant(value):
    const = helper.make_node("Constant", [], ["mode"], name="mode_const",
                             value=_bool("mode_value", value))
    return _model([const, _dropout("mode")], initializers=[RATIO])


def dropout_mode_initializer(value, also_input=False):
    inputs = [helper.make_tensor_value_info("mode", TensorProto.BOOL, [])] if also_input else []
    return _model([_dropout("mode")], inputs, [RATIO, _bool("mode", value)])


def dropout_mode_through_identity(value):
    const = helper.make_node("Constant", [], ["mode0"], name="mode_const",
                             value=_bool("mode_value", value))
    ident = helper.make_node("Identity", ["mode0"], ["mode"], name="mode_identity")
    return _model([const, ident, _dropout("mode")], initializers=[RATIO])


def dropout_without_mode():
    return _model([helper.make_node("Dropout", ["x"], ["y"], name="the_dropout")])


def _function(name, nodes, inputs=("x",), outputs=("y",)):
    return helper.make_function("local", name, list(inputs), list(outputs), nodes,
                                [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])


def _call(function, inputs=("x",), name="call_site"):
    return helper.make_node(function, list(inputs), ["y"], name=name, domain="local")


def _noisy(name="Noisy", op="RandomUniformLike"):
    return _function(name, [helper.make_node(op, ["x"], ["noise"], name="rng_in_function"),
                            helper.make_node("Add", ["x", "noise"], ["y"], name="add")])


def random_op_in_function():
    return _model([_call("Noisy")], functions=[_noisy()])


def random_op_in_nested_function():
    outer = _function("Outer", [helper.make_node("Noisy", ["x"], ["y"], name="inner_call",
                                                 domain="local")])
    return _model([_call("Outer")], functions=[outer, _noisy(op="RandomNormalLike")])


def random_op_in_if_inside_function():
    then = helper.make_graph(
        [helper.make_node("Bernoulli", ["x"], ["then_y"], name="rng_in_branch")], "then", [],
        [helper.make_tensor_value_info("then_y", TensorProto.FLOAT, ["N", 4])])
    other = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["else_y"], name="else_identity")], "else", [],
        [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, ["N", 4])])
    body = [helper.make_node("Constant", [], ["cond"], name="cond",
                             value=_bool("cond_value", False)),
            helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then,
                             else_branch=other)]
    return _model([_call("Branchy")], functions=[_function("Branchy", body)])


def dropout_in_function(value):
    body = [helper.make_node("Dropout", ["x", "", "mode"], ["y"], name="inner_dropout")]
    const = helper.make_node("Constant", [], ["mode"], name="mode_const",
                             value=_bool("mode_value", value))
    return _model([const, _call("Drop", ("x", "mode"))],
                  functions=[_function("Drop", body, ("x", "mode"))])


def random_op_in_graph():
    return _model([helper.make_node("RandomUniformLike", ["x"], ["noise"], name="rng_in_graph"),
                   helper.make_node("Add", ["x", "noise"], ["y"], name="add")])


def clean_function():
    body = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    return _model([_call("Plain")], functions=[_function("Plain", body)])


# name -> (builder, text every finding list must contain, or None when it must be clean)
CORPUS = {
    "dropout_mode_graph_input": (dropout_mode_graph_input,
                                 ["'the_dropout'", "graph input 'training'"]),
    "dropout_mode_constant_true": (lambda: dropout_mode_constant(True),
                                   ["'the_dropout'", "Constant node 'mode_const' = True"]),
    "dropout_mode_initializer_true": (lambda: dropout_mode_initializer(True),
                                      ["'the_dropout'", "initializer 'mode' = True"]),
    "dropout_mode_overridable_initializer": (
        lambda: dropout_mode_initializer(False, also_input=True),
        ["'the_dropout'", "graph input 'mode'"]),
    "dropout_mode_identity_of_true": (lambda: dropout_mode_through_identity(True),
                                      ["'the_dropout'", "= True"]),
    "random_op_in_function": (random_op_in_function,
                              ["RandomUniformLike", "function local:Noisy",
                               "'call_site'", "'rng_in_function'"]),
    "random_op_in_nested_function": (random_op_in_nested_function,
                                     ["RandomNormalLike", "function local:Noisy",
                                      "'inner_call'", "'rng_in_function'"]),
    "random_op_in_if_inside_function": (random_op_in_if_inside_function,
                                        ["Bernoulli", "function local:Branchy",
                                         "branch.then_branch", "'rng_in_branch'"]),
    "dropout_in_function_called_with_true": (lambda: dropout_in_function(True),
                                             ["'inner_dropout'", "function local:Drop",
                                              "= True"]),
    "random_op_in_graph": (random_op_in_graph, ["RandomUniformLike", "'rng_in_graph'"]),
    "dropout_mode_constant_false": (lambda: dropout_mode_constant(False), None),
    "dropout_mode_initializer_false": (lambda: dropout_mode_initializer(False), None),
    "dropout_mode_identity_of_false": (lambda: dropout_mode_through_identity(False), None),
    "dropout_without_mode": (dropout_without_mode, None),
    "dropout_in_function_called_with_false": (lambda: dropout_in_function(False), None),
    "clean_function": (clean_function, None),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx_corpus")
    paths = {}
    for name, (build, _) in CORPUS.items():
        paths[name] = root / f"{name}.onnx"
        onnx.save(build(), paths[name])
    return paths


@pytest.mark.parametrize("name", CORPUS)
def test_inspect_flags_the_leak_and_names_the_node(corpus, name):
    expected = CORPUS[name][1]
    found = [str(f) for f in inspect(corpus[name])]
    if expected is None:
        assert found == [], found
    else:
        assert len(found) == 1 and all(text in found[0] for text in expected), found


@pytest.mark.parametrize("name", CORPUS)
def test_structure_check_flags_the_leak(corpus, name):
    # What verify runs on its ONNX export: even an identical reference (the leak is not
    # DropBlock's) does not excuse a random op or a Dropout in training mode.
    graph = onnx_graph(corpus[name])
    check, findings = structure_check(graph, onnx_graph(corpus[name]), ["drop_block2d"])
    assert check.ok is (CORPUS[name][1] is None), [str(f) for f in findings]


def test_cli_inspect_exits_1_naming_the_node(corpus, capsys):
    assert cli.main(["inspect", str(corpus["dropout_mode_constant_false"])]) == 0
    for name in ("dropout_mode_graph_input", "random_op_in_nested_function"):
        capsys.readouterr()
        assert cli.main(["inspect", str(corpus[name])]) == 1, name
        out = capsys.readouterr()
        assert all(text in out.out + out.err for text in CORPUS[name][1]), out


def test_function_ops_count_once_and_reach_the_op_multiset(corpus):
    # Two call sites of one function: its body is one set of ops (as SavedModel functions are),
    # and its ops are in the multiset the structure check compares.
    twice = _model([_call("Noisy", name="first"),
                    helper.make_node("Noisy", ["y"], ["z"], name="second", domain="local")],
                   functions=[_noisy()])
    twice.graph.output[0].name = "z"
    graph = onnx_graph(twice)
    assert graph.ops["local:Noisy"] == 2 and graph.ops["RandomUniformLike"] == 1
    assert graph.random_ops() == ["RandomUniformLike"]


def test_a_function_calling_itself_does_not_hang():
    body = [helper.make_node("Loopy", ["x"], ["y"], name="self_call", domain="local")]
    graph = helper.make_graph([_call("Loopy")], "corpus", [X], [Y])
    model = helper.make_model(graph, opset_imports=OPSET,
                              functions=[_function("Loopy", body)], ir_version=8)
    assert onnx_graph(model).ops["local:Loopy"] == 2


def test_dropout_mode_is_resolved_per_call_site():
    body = [helper.make_node("Dropout", ["x", "", "mode"], ["y"], name="inner_dropout")]
    nodes = [helper.make_node("Constant", [], ["off"], name="off", value=_bool("v0", False)),
             helper.make_node("Constant", [], ["on"], name="on", value=_bool("v1", True)),
             helper.make_node("Drop", ["x", "off"], ["h"], name="safe_call", domain="local"),
             helper.make_node("Drop", ["h", "on"], ["y"], name="unsafe_call", domain="local")]
    model = _model(nodes, functions=[_function("Drop", body, ("x", "mode"))])
    [finding] = inspect_proto(model)
    assert "'unsafe_call'" in finding and "Constant node 'on' = True" in finding, finding


def inspect_proto(model):
    from tfdropblock.export.checks.rules import content_findings
    return [str(f) for f in content_findings(onnx_graph(model), check="inspect")]


def test_corpus_models_are_valid_onnx(corpus):
    # The corpus is what a real exporter could write: ORT loads and runs the clean ones.
    import onnxruntime as ort

    x = np.ones((2, 4), np.float32)
    for name in ("dropout_mode_constant_false", "dropout_without_mode", "clean_function"):
        session = ort.InferenceSession(str(corpus[name]), providers=["CPUExecutionProvider"])
        assert session.run(None, {"x": x})[0].shape == (2, 4), name


@pytest.mark.parametrize("is_test, flagged", [(None, True), (0, True), (1, False)])
def test_opset_6_dropout_without_is_test_is_training_mode(is_test, flagged):
    # Before opset 7 Dropout trains unless is_test is set; there is no training_mode input.
    attrs = {} if is_test is None else {"is_test": is_test}
    node = helper.make_node("Dropout", ["x"], ["y"], name="old_dropout", **attrs)
    model = helper.make_model(helper.make_graph([node], "old", [X], [Y]),
                              opset_imports=[helper.make_opsetid("", 6)], ir_version=3)
    found = inspect_proto(model)
    assert (found != []) is flagged and all("'old_dropout'" in f for f in found), found
