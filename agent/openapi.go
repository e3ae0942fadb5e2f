package agent

import (
	_ "embed"
	"encoding/json"
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gpufarm/gpufarm/agent/api"
)

// openapiDoc is the API's OpenAPI document as kept in the repository; a
// test checks that it is what the route table and the api types give.
//
//go:embed openapi.json
var openapiDoc []byte

func (s *Server) openapi(_ caller, w http.ResponseWriter, _ *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openapiDoc)
	return nil
}

type obj = map[string]any

var pathParam = regexp.MustCompile(`\{([a-z_]+)\}`)

// generateOpenAPI builds the OpenAPI 3.0 document of routes.
func generateOpenAPI() ([]byte, error) {
	schemas := obj{"Error": nil}
	schemas["Error"] = schemaOf(reflect.TypeFor[api.Error](), schemas)
	paths := obj{}
	for _, rt := range routes {
		op := obj{"summary": rt.summary, "operationId": operationID(rt)}
		var params []any
		for _, m := range pathParam.FindAllStringSubmatch(rt.path, -1) {
			params = append(params, obj{"name": m[1], "in": "path", "required": true, "schema": obj{"type": "string"}})
		}
		for _, q := range rt.query {
			s := obj{"type": q.typ}
			if q.typ == "date-time" {
				s = obj{"type": "string", "format": "date-time"}
			}
			if q.repeated {
				s = obj{"type": "array", "items": s}
			}
			params = append(params, obj{"name": q.name, "in": "query", "description": q.doc, "schema": s})
		}
		if len(params) > 0 {
			op["parameters"] = params
		}
		switch {
		case rt.body != nil:
			op["requestBody"] = obj{"required": true, "content": obj{"application/json": obj{"schema": schemaOf(reflect.TypeOf(rt.body), schemas)}}}
		case rt.bodyType != "":
			op["requestBody"] = obj{"required": true, "content": obj{rt.bodyType: obj{"schema": obj{"type": "string", "format": "binary"}}}}
		}
		ok := obj{"description": http.StatusText(rt.status)}
		switch {
		case rt.respType == "text/event-stream":
			ok["description"] = "A stream of events; each data line is an Event."
			ok["content"] = obj{rt.respType: obj{"schema": schemaOf(reflect.TypeOf(rt.resp), schemas)}}
		case rt.resp != nil:
			ok["content"] = obj{"application/json": obj{"schema": schemaOf(reflect.TypeOf(rt.resp), schemas)}}
		case rt.respType != "":
			ok["content"] = obj{rt.respType: obj{"schema": obj{"type": "string"}}}
		}
		if rt.path == "/v1/ledger/records" {
			ok["content"].(obj)["text/csv"] = obj{"schema": obj{"type": "string"}}
		}
		op["responses"] = obj{strconv.Itoa(rt.status): ok, "default": obj{"$ref": "#/components/responses/Error"}}
		if rt.public {
			op["security"] = []any{}
		}
		if rt.operator {
			op["description"] = "The operator's only: a tenant's token gets 403."
		}
		p, _ := paths[rt.path].(obj)
		if p == nil {
			p = obj{}
			paths[rt.path] = p
		}
		p[strings.ToLower(rt.method)] = op
	}
	doc := obj{
		"openapi": "3.0.3",
		"info": obj{"title": "gpufarm node agent", "version": "1",
			"description": "The API of one GPU node: inventory and readiness, workloads, cordon and drain, power, the ledger and the event stream. " +
				"On loopback it may run without credentials; elsewhere it needs TLS and a bearer token or a client certificate. " +
				"A token scoped to a tenant sees only that tenant's workloads, records and events."},
		"paths": paths,
		"components": obj{
			"schemas":         schemas,
			"securitySchemes": obj{"bearer": obj{"type": "http", "scheme": "bearer"}},
			"responses": obj{"Error": obj{"description": "An error, with its category and what to do.",
				"content": obj{"application/json": obj{"schema": obj{"$ref": "#/components/schemas/Error"}}}}},
		},
		"security": []any{obj{"bearer": []any{}}},
	}
	return json.MarshalIndent(doc, "", "  ")
}

func operationID(rt route) string {
	words := []string{strings.ToLower(rt.method)}
	for _, part := range strings.Split(strings.Trim(rt.path, "/"), "/") {
		if m := pathParam.FindStringSubmatch(part); m != nil {
			words = append(words, "by", m[1])
			continue
		}
		words = append(words, strings.ReplaceAll(strings.ReplaceAll(part, ".", "_"), "-", "_"))
	}
	return strings.Join(words, "_")
}

// schemaOf is the JSON schema of t; named structs of package api go to
// schemas and are referred to.
func schemaOf(t reflect.Type, schemas obj) obj {
	switch {
	case t == reflect.TypeFor[time.Time]():
		return obj{"type": "string", "format": "date-time"}
	case t.Kind() == reflect.Pointer:
		s := schemaOf(t.Elem(), schemas)
		if _, ref := s["$ref"]; ref {
			return obj{"allOf": []any{s}, "nullable": true}
		}
		s["nullable"] = true
		return s
	}
	switch t.Kind() {
	case reflect.String:
		return obj{"type": "string"}
	case reflect.Bool:
		return obj{"type": "boolean"}
	case reflect.Int, reflect.Int32:
		return obj{"type": "integer"}
	case reflect.Int64, reflect.Uint64:
		return obj{"type": "integer", "format": "int64"}
	case reflect.Float64:
		return obj{"type": "number"}
	case reflect.Slice:
		return obj{"type": "array", "items": schemaOf(t.Elem(), schemas)}
	case reflect.Map:
		return obj{"type": "object", "additionalProperties": schemaOf(t.Elem(), schemas)}
	case reflect.Struct:
		if _, done := schemas[t.Name()]; !done {
			schemas[t.Name()] = nil // a placeholder against cycles
			props, required := obj{}, []string{}
			for i := range t.NumField() {
				f := t.Field(i)
				name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
				if name == "" || name == "-" {
					continue
				}
				props[name] = schemaOf(f.Type, schemas)
				if !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") {
					required = append(required, name)
				}
			}
			s := obj{"type": "object", "properties": props}
			if len(required) > 0 {
				s["required"] = required
			}
			schemas[t.Name()] = s
		}
		return obj{"$ref": "#/components/schemas/" + t.Name()}
	}
	return obj{}
}
