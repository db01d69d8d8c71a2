"""The fields of the custom resources ``headrace k8s render`` writes, as their CRDs define them,
written out as strict JSON Schemas (an unknown field is an error, as the API server's structural
schema pruning would silently drop it):

- ``FlinkDeployment`` and ``FlinkSessionJob``, ``flink.apache.org/v1beta1``, of the Flink
  Kubernetes Operator 1.15.0 (``helm/flink-kubernetes-operator/crds/`` of the release-1.15.0 tag;
  ``flinkVersion`` lists the ``FlinkVersion`` enum of that release's API, from which its build
  generates the CRD: the checked-in YAML of the tag still stops at v2_2).
- ``ServiceMonitor``, ``monitoring.coreos.com/v1``, of prometheus-operator v0.93.0.

Only the fields a rendered resource may use are listed; the pod templates inside are core
``PodTemplateSpec`` objects, checked with kubernetes-validate instead.
"""

from __future__ import annotations

from typing import Any

STRING: dict[str, Any] = {"type": "string"}
INTEGER: dict[str, Any] = {"type": "integer"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}
STRINGS: dict[str, Any] = {"type": "array", "items": STRING}
STRING_MAP: dict[str, Any] = {"type": "object", "additionalProperties": STRING}


def strict(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "additionalProperties": False, "required": list(required)}


METADATA = strict({"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                   "namespace": STRING, "labels": STRING_MAP, "annotations": STRING_MAP}, ("name",))

RESOURCE = strict({"cpu": {"type": "number"}, "memory": STRING, "ephemeralStorage": STRING})
#: a pod template (checked as a core Pod separately)
POD_TEMPLATE = strict({"apiVersion": STRING, "kind": STRING, "metadata": {"type": "object"},
                       "spec": {"type": "object"}})
FLINK_VERSIONS = ["v1_13", "v1_14", "v1_15", "v1_16", "v1_17", "v1_18", "v1_19", "v1_20",
                  "v2_0", "v2_1", "v2_2", "v2_3", "v2_4"]

JOB_SPEC = strict({
    "allowNonRestoredState": BOOLEAN, "args": STRINGS, "autoscalerResetNonce": INTEGER,
    "checkpointTriggerNonce": INTEGER, "entryClass": STRING, "initialSavepointPath": STRING, "jarURI": STRING,
    "parallelism": INTEGER, "savepointRedeployNonce": INTEGER, "savepointTriggerNonce": INTEGER,
    "state": {"enum": ["running", "suspended"]},
    "upgradeMode": {"enum": ["last-state", "savepoint", "stateless"]}})

FLINK_DEPLOYMENT = strict({
    "apiVersion": {"const": "flink.apache.org/v1beta1"}, "kind": {"const": "FlinkDeployment"}, "metadata": METADATA,
    "spec": strict({
        "flinkConfiguration": STRING_MAP,  # x-kubernetes-preserve-unknown-fields; Flink reads strings
        "flinkVersion": {"enum": FLINK_VERSIONS},
        "image": STRING, "imagePullPolicy": STRING,
        "ingress": strict({"annotations": STRING_MAP, "className": STRING, "labels": STRING_MAP,
                           "template": STRING}),
        "job": JOB_SPEC,
        "jobManager": strict({"podTemplate": POD_TEMPLATE, "replicas": INTEGER, "resource": RESOURCE}),
        "logConfiguration": STRING_MAP,
        "mode": {"enum": ["native", "standalone"]},
        "podTemplate": POD_TEMPLATE,
        "restartNonce": INTEGER,
        "serviceAccount": STRING,
        "taskManager": strict({"podTemplate": POD_TEMPLATE, "replicas": INTEGER, "resource": RESOURCE}),
    })}, ("apiVersion", "kind", "metadata", "spec"))

FLINK_SESSION_JOB = strict({
    "apiVersion": {"const": "flink.apache.org/v1beta1"}, "kind": {"const": "FlinkSessionJob"}, "metadata": METADATA,
    "spec": strict({"deploymentName": STRING, "flinkConfiguration": STRING_MAP, "job": JOB_SPEC,
                    "restartNonce": INTEGER}, ("deploymentName", "job")),
}, ("apiVersion", "kind", "metadata", "spec"))

LABEL_SELECTOR = strict({"matchLabels": STRING_MAP, "matchExpressions": {"type": "array"}})
ENDPOINT = strict({"port": STRING, "targetPort": {}, "path": STRING, "scheme": {"enum": ["http", "https", "HTTP",
                                                                                        "HTTPS"]},
                   "interval": {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
                                                              r"(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                   "scrapeTimeout": STRING, "honorLabels": BOOLEAN, "params": {"type": "object"}})
SERVICE_MONITOR = strict({
    "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"}, "metadata": METADATA,
    "spec": strict({"selector": LABEL_SELECTOR, "namespaceSelector": strict({"any": BOOLEAN, "matchNames": STRINGS}),
                    "endpoints": {"type": "array", "items": ENDPOINT}, "jobLabel": STRING,
                    "targetLabels": STRINGS, "podTargetLabels": STRINGS}, ("selector",)),
}, ("apiVersion", "kind", "metadata", "spec"))

CUSTOM = {"FlinkDeployment": FLINK_DEPLOYMENT, "FlinkSessionJob": FLINK_SESSION_JOB, "ServiceMonitor": SERVICE_MONITOR}
