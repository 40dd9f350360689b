"""refine_af.argo.lint: each check catches a hand-broken workflow, and a good one of the rendered shape is clean."""

from __future__ import annotations

import copy

import pytest
import yaml

from refine_af.argo.lint import expression_refs, lint, parse_depends

GOOD = yaml.safe_load_all("""
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {name: demo}
spec:
  entrypoint: pipeline
  arguments:
    parameters:
    - {name: config, value: "a: 1"}
    - {name: run, value: ""}
  podGC: {strategy: OnPodSuccess}
  templates:
  - name: pipeline
    dag:
      tasks:
      - name: init
        template: init
      - name: work-shard
        template: work-shard
        depends: init
        withSequence: {count: "{{tasks.init.outputs.parameters.shards-work}}"}
        arguments:
          parameters:
          - {name: run, value: "{{tasks.init.outputs.parameters.run}}"}
          - {name: key, value: "{{tasks.init.outputs.parameters.key}}"}
          - {name: shard, value: "{{item}}"}
          - {name: shards, value: "{{tasks.init.outputs.parameters.shards-work}}"}
      - name: work
        template: work
        depends: work-shard && init
        arguments:
          parameters:
          - {name: run, value: "{{tasks.init.outputs.parameters.run}}"}
          - {name: key, value: "{{tasks.init.outputs.parameters.key}}"}
      - name: evaluate
        template: evaluate
        depends: (work.Succeeded || work.Skipped) && !init.Failed
        when: "{{tasks.init.outputs.parameters.enabled-evaluate}} == true"
        arguments:
          parameters:
          - {name: run, value: "{{tasks.init.outputs.parameters.run}}"}
          - {name: key, value: "{{tasks.init.outputs.parameters.key}}"}
  - name: init
    inputs:
      artifacts:
      - {name: config, path: /tmp/refine-af/config.yaml, raw: {data: "{{workflow.parameters.config}}"}}
    container:
      image: refine-af:cpu
      command: [refine-af, init, --config, /tmp/refine-af/config.yaml, --run, "{{workflow.parameters.run}}",
                --name, "{{workflow.name}}"]
    outputs:
      parameters:
      - {name: run, valueFrom: {path: /tmp/refine-af/outputs/run}}
      - {name: key, valueFrom: {path: /tmp/refine-af/outputs/key}}
      - {name: enabled-evaluate, valueFrom: {path: /tmp/refine-af/outputs/enabled-evaluate}}
      - {name: shards-work, valueFrom: {path: /tmp/refine-af/outputs/shards-work}}
  - name: work-shard
    inputs:
      parameters: [{name: run}, {name: key}, {name: shard}, {name: shards}]
    retryStrategy:
      limit: 3
      retryPolicy: Always
      expression: "lastRetry.exitCode != 2 && retries < 3"
    podSpecPatch: '{"containers": [{"name": "main", "resources": {"limits": {"memory": "{{=asInt(retries) + 4}}Gi"}}}]}'
    activeDeadlineSeconds: 3600
    container:
      image: refine-af:cpu
      command: [refine-af, stage, work, --run, "{{inputs.parameters.run}}",
                --shard, "{{inputs.parameters.shard}}/{{inputs.parameters.shards}}"]
      env:
      - {name: REFINE_AF_OUTPUTS, value: /tmp/refine-af/outputs}
      - {name: ATTEMPT, value: "{{retries}}"}
      - {name: AWS_ACCESS_KEY_ID, valueFrom: {secretKeyRef: {name: s3, key: access-key}}}
  - name: work
    inputs:
      parameters: [{name: run}, {name: key}]
    container:
      image: refine-af:cpu
      command: [refine-af, stage, work, --run, "{{inputs.parameters.run}}", --merge]
    outputs:
      artifacts:
      - name: manifest
        path: /tmp/refine-af/outputs/manifest.json
        s3: {key: "{{inputs.parameters.key}}/work/manifest.json"}
        archive: {none: {}}
        optional: true
  - name: evaluate
    inputs:
      parameters: [{name: run}, {name: key, default: ""}]
    container:
      image: refine-af:cpu
      command: [refine-af, stage, evaluate, --run, "{{inputs.parameters.run}}"]
      args: ["{{=inputs.parameters['key'] == '' ? 'none' : inputs.parameters.key}}"]
    outputs:
      parameters:
      - {name: score, valueFrom: {path: /tmp/refine-af/outputs/score, default: ""}}
---
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {generateName: demo-}
spec:
  workflowTemplateRef: {name: demo}
  arguments:
    parameters:
    - {name: config, value: "a: 2"}
    - {name: run, value: s3://bucket/runs/x}
""")
GOOD = list(GOOD)


def docs():
    return copy.deepcopy(GOOD)


def tpl(documents, name):
    return next(t for t in documents[0]["spec"]["templates"] if t["name"] == name)


def task(documents, name):
    return next(t for t in tpl(documents, "pipeline")["dag"]["tasks"] if t["name"] == name)


def assert_caught(documents, *fragments):
    problems = lint(documents)
    assert any(all(f in p for f in fragments) for p in problems), problems


def test_good_workflow_is_clean():
    assert lint(docs()) == []


def test_entrypoint_must_exist():
    d = docs()
    d[0]["spec"]["entrypoint"] = "pipe"
    assert_caught(d, "WorkflowTemplate/demo", "entrypoint 'pipe'")
    d = docs()
    d[1]["spec"]["entrypoint"] = "nope"
    assert_caught(d, "Workflow/demo-", "entrypoint 'nope'")


def test_workflow_template_ref_must_resolve():
    d = docs()
    d[1]["spec"]["workflowTemplateRef"]["name"] = "other"
    assert_caught(d, "workflowTemplateRef 'other'")


def test_task_template_must_exist():
    d = docs()
    task(d, "work")["template"] = "wrok"
    assert_caught(d, "task 'work'", "template 'wrok' does not exist")


@pytest.mark.parametrize("depends, fragment", [
    ("init && ghost", "depends on 'ghost'"),
    ("init &&", "depends 'init &&'"),
    ("(init || work-shard", "unbalanced"),
    ("init.Finished", "unknown result"),
    ("work", "depends on itself"),
])
def test_depends(depends, fragment):
    d = docs()
    task(d, "work")["depends"] = depends
    assert_caught(d, "task 'work'", fragment)


def test_dependency_cycle():
    d = docs()
    task(d, "init")["depends"] = "evaluate"
    assert_caught(d, "dependency cycle")


def test_parse_depends():
    assert parse_depends("a && (b.Succeeded || !c-2.Skipped)") == [("a", None), ("b", "Succeeded"), ("c-2", "Skipped")]
    for bad in ("a b", "&& a", "a && (b", "a)", "a ||"):
        with pytest.raises(ValueError):
            parse_depends(bad)


def test_input_parameter_must_be_declared():
    d = docs()
    tpl(d, "work")["container"]["command"].append("{{inputs.parameters.shard}}")
    assert_caught(d, "template 'work'", "container.command[6]", "no such input parameter")


def test_workflow_parameter_must_be_declared():
    d = docs()
    tpl(d, "init")["container"]["command"][5] = "{{workflow.parameters.rnu}}"
    assert_caught(d, "template 'init'", "no such workflow parameter")
    # declared only by the referencing Workflow is enough
    d[1]["spec"]["arguments"]["parameters"].append({"name": "rnu", "value": "x"})
    assert lint(d) == []


def test_task_output_must_come_from_an_ancestor_and_exist():
    d = docs()
    task(d, "work")["arguments"]["parameters"][0]["value"] = "{{tasks.evaluate.outputs.parameters.score}}"
    assert_caught(d, "task 'work'", "'evaluate' is not a task this one depends on")
    d = docs()
    task(d, "work")["arguments"]["parameters"][0]["value"] = "{{tasks.init.outputs.parameters.runn}}"
    assert_caught(d, "task 'work'", "has no output parameter 'runn'")
    d = docs()  # through depends transitively (evaluate -> work -> init) is fine
    task(d, "evaluate")["arguments"]["parameters"][1]["value"] = "{{tasks.work-shard.status}}"
    assert lint(d) == []


def test_item_only_inside_a_loop():
    d = docs()
    task(d, "work")["arguments"]["parameters"][1]["value"] = "{{item}}"
    assert_caught(d, "task 'work'", "'item' outside")
    d = docs()
    tpl(d, "work")["container"]["args"] = ["{{item}}"]
    assert_caught(d, "template 'work'", "'item' outside")


def test_unknown_variables():
    d = docs()
    tpl(d, "init")["container"]["command"][7] = "{{workflow.nmae}}"
    assert_caught(d, "unknown workflow variable")
    d = docs()
    tpl(d, "init")["container"]["command"][7] = "{{run}}"
    assert_caught(d, "'run': unknown variable")


def test_retries_only_where_a_retry_strategy_applies():
    d = docs()
    tpl(d, "init")["container"]["command"][7] = "{{retries}}"
    assert_caught(d, "template 'init'", "'retries' outside")
    d = docs()
    tpl(d, "work-shard")["metadata"] = {"labels": {"attempt": "{{retries}}"}}
    assert_caught(d, "template 'work-shard'", "metadata.labels.attempt", "'retries' outside")


def test_expression_tags_are_checked():
    d = docs()
    tpl(d, "work-shard")["podSpecPatch"] = '{"x": "{{=sprig.int(inputs.parameters.shardz) + retries}}"}'
    assert_caught(d, "podSpecPatch", "no such input parameter")
    d = docs()
    tpl(d, "work-shard")["podSpecPatch"] = '{"x": "{{=asint(retries)}}"}'
    assert_caught(d, "unknown function asint()")


def test_retry_expression_is_checked():
    d = docs()
    tpl(d, "work-shard")["retryStrategy"]["expression"] = "lastRetry.exitcode != 2"
    assert_caught(d, "retryStrategy.expression", "lastRetry.exitcode")
    d = docs()
    tpl(d, "work")["container"]["args"] = ["{{lastRetry.exitCode}}"]
    assert_caught(d, "outside retryStrategy.expression")


def test_task_arguments_match_template_inputs():
    d = docs()
    task(d, "work")["arguments"]["parameters"].pop()  # key has no default
    assert_caught(d, "task 'work'", "input parameter 'key' has no default and no argument")
    d = docs()
    task(d, "evaluate")["arguments"]["parameters"].pop()  # key has a default there
    assert lint(d) == []
    d = docs()
    task(d, "work")["arguments"]["parameters"].append({"name": "shard", "value": "0"})
    assert_caught(d, "task 'work'", "argument parameter 'shard'", "declares no such input")


def test_workflow_parameters_need_values():
    d = docs()
    del d[1]["spec"]["arguments"]["parameters"][1]["value"]
    assert lint(d) == []  # the template's default still applies
    del d[0]["spec"]["arguments"]["parameters"][1]["value"]
    assert_caught(d, "Workflow/demo-", "'run' has no value")


def test_expression_refs():
    refs, funcs = expression_refs(
        "sprig.int(retries) > 0 ? inputs.parameters['my-p'] : \"tasks.x\" + string(f(a).member) + {k: b}.k")
    assert refs == [["retries"], ["inputs", "parameters", "my-p"], ["a"], ["b"]]
    assert funcs == ["sprig.int", "string", "f"]
