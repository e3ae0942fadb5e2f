// Package api holds the types of the node agent's HTTP API, as they go
// over the wire: JSON with snake_case keys, times in RFC 3339, durations
// in seconds, money as decimal strings. The agent (package agent) serves
// them and package agent/client sends them; neither needs the other's
// dependencies. The OpenAPI document of the API is agent/openapi.json.
//
// These types are the API's contract and change only compatibly: new
// fields may appear, none changes meaning. The SDK's own types (workload,
// gpu, accounting) are free to evolve behind them.
package api
