"""The OpenAPI description of the HTTP API, served at ``GET /openapi.json``.

Written by hand next to the routes (``api.py``); ``tests/assemblexd/test_openapi.py`` checks that
the running application and this document name the same operations, and that answers match the
documented status codes and schemas.
"""

from __future__ import annotations

from typing import Any

__all__ = ["spec"]

_ERROR = {
    "description": "An error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_APP = {"name": "app", "in": "path", "required": True, "schema": {"type": "string"}}
_OP = {"name": "op", "in": "path", "required": True, "schema": {"type": "string"}}
_KEY = {
    "name": "key",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,200}$"},
}
_SHA = {"name": "sha256", "in": "path", "required": True, "schema": {"type": "string"}}
_BYTES = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): _ERROR for c in codes}


def _call(op: bool) -> dict[str, Any]:
    params = [_APP, _OP] if op else [_APP]
    operation = {
        "parameters": params,
        "requestBody": {"required": False, "content": _BYTES},
        "responses": {
            "200": {"description": "The guest's response", "content": _BYTES},
            **_errors(401, 404, 408, 413, 500, 503, 504),
        },
    }
    return {
        "get": {**operation, "summary": "Call an operation" + ("" if op else " (main)")},
        "post": {**operation, "summary": "Call an operation" + ("" if op else " (main)")},
    }


def _actor_call() -> dict[str, Any]:
    operation = {
        "parameters": [_APP, _KEY, _OP],
        "requestBody": {"required": False, "content": _BYTES},
        "responses": {
            "200": {"description": "The guest's response", "content": _BYTES},
            **_errors(400, 401, 404, 408, 413, 500, 503, 504),
        },
    }
    summary = "Call an operation of an actor (one live instance per key, in the cluster)"
    return {"get": {**operation, "summary": summary}, "post": {**operation, "summary": summary}}


def spec() -> dict[str, Any]:
    """The OpenAPI 3.0 document."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "assemblexd", "version": "0.1.0"},
        "paths": {
            "/deploy": {
                "post": {
                    "summary": "Deploy a waPC module (every node follows)",
                    "parameters": [
                        {"name": "name", "in": "query", "schema": {"type": "string"}},
                        {"name": "capabilities", "in": "query", "schema": {"type": "string"}},
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["wasm"],
                                    "properties": {
                                        "wasm": {"type": "string", "format": "binary"},
                                        "name": {"type": "string"},
                                        "capabilities": {"type": "string"},
                                    },
                                }
                            },
                            "application/wasm": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "responses": {
                        "201": _json("Deployed", "Deployed"),
                        **_errors(400, 401, 408, 413),
                    },
                }
            },
            "/call/{app}/{op}": _call(True),
            "/call/{app}": _call(False),
            "/actors/{app}/{key}/{op}": _actor_call(),
            "/actors/{app}/{key}": {
                "get": {
                    "summary": "Where an actor lives",
                    "parameters": [_APP, _KEY],
                    "responses": {
                        "200": _json("Actor", "Its owner, generation, whether live, alarm"),
                        **_errors(400, 401, 404),
                    },
                }
            },
            "/apps": {
                "get": {
                    "summary": "Every deployed app",
                    "responses": {
                        "200": {
                            "description": "The apps",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/App"},
                                    }
                                }
                            },
                        },
                        **_errors(401),
                    },
                }
            },
            "/apps/{app}": {
                "get": {
                    "summary": "One app",
                    "parameters": [_APP],
                    "responses": {"200": _json("App", "The app"), **_errors(401, 404)},
                },
                "delete": {
                    "summary": "Undeploy, cluster-wide",
                    "parameters": [_APP],
                    "responses": {"204": {"description": "Undeployed"}, **_errors(401, 404)},
                },
            },
            "/apps/{app}/rollback": {
                "post": {
                    "summary": "Make the previous version current again, cluster-wide",
                    "parameters": [_APP],
                    "responses": {
                        "200": _json("Deployed", "Rolled back"),
                        **_errors(400, 401, 404),
                    },
                }
            },
            "/status": {
                "get": {
                    "summary": "This node, its views, the members it knows, the apps",
                    "description": "Without the read or deploy token: node ids are aliases"
                    " and no URL or address is shown. 401 when the node has a read token"
                    " and the request does not prove it.",
                    "responses": {
                        "200": {
                            "description": "JSON, or an HTML page that draws the graph",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Status"}
                                },
                                "text/html": {"schema": {"type": "string"}},
                            },
                        },
                        **_errors(401),
                    },
                }
            },
            "/blobs/{sha256}": {
                "get": {
                    "summary": "Module bytes, for peers",
                    "parameters": [_SHA],
                    "responses": {
                        "200": {
                            "description": "The module",
                            "content": {"application/wasm": {"schema": {"type": "string"}}},
                        },
                        **_errors(401, 404),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_errors(401),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "responses": {
                        "200": {
                            "description": "Alive",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["ok"],
                                        "properties": {"ok": {"type": "boolean"}},
                                    }
                                }
                            },
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.0",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
            "/peer/actors": {
                "post": {
                    "summary": "Actor messages between peers (msgpack; proven by the cluster key)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/msgpack": {"schema": {"type": "string"}}},
                    },
                    "responses": {
                        "200": {
                            "description": "The answer (msgpack)",
                            "content": {"application/msgpack": {"schema": {"type": "string"}}},
                        },
                        **_errors(400, 401, 408, 413),
                    },
                }
            },
            "/peer": {
                "get": {
                    "summary": "Peer protocol (websocket; membership and store sync)",
                    "responses": {
                        "101": {"description": "Switching to the websocket"},
                        **_errors(503),
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
                "Actor": {
                    "type": "object",
                    "required": ["owner", "generation", "active", "alarm_at"],
                    "properties": {
                        "owner": {"type": "string", "nullable": True},
                        "generation": {"type": "integer"},
                        "active": {"type": "boolean"},
                        "alarm_at": {
                            "type": "integer",
                            "nullable": True,
                            "description": "When the alarm is due, ms since the epoch",
                        },
                    },
                },
                "Deployed": {
                    "type": "object",
                    "required": ["name", "version", "sha256", "size"],
                    "properties": {
                        "name": {"type": "string"},
                        "version": {"type": "integer"},
                        "sha256": {"type": "string"},
                        "size": {"type": "integer"},
                    },
                },
                "App": {
                    "type": "object",
                    "required": ["name", "version", "sha256", "size", "capabilities"],
                    "properties": {
                        "name": {"type": "string"},
                        "version": {"type": "integer"},
                        "sha256": {"type": "string"},
                        "size": {"type": "integer"},
                        "deployed_at": {"type": "number"},
                        "origin": {"type": "string"},
                        "capabilities": {"type": "array", "items": {"type": "string"}},
                        "history": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "Status": {
                    "type": "object",
                    "required": ["node", "active", "passive", "members", "apps"],
                    "properties": {
                        "node": {"type": "object"},
                        "active": {"type": "array", "items": {"type": "object"}},
                        "passive": {"type": "array", "items": {"type": "object"}},
                        "members": {"type": "array", "items": {"type": "object"}},
                        "apps": {"type": "array", "items": {"type": "object"}},
                    },
                },
            }
        },
    }
