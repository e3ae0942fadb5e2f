// Package agent is the HTTP API of one GPU node, for the control planes
// that place work on it: inventory and AI readiness, submit, get, list,
// cancel and forget workloads, their logs, cordon and drain of a GPU or
// the node, the power budget, the ledger's records and summaries, image
// import, an event stream (Server-Sent Events, resumable from a sequence
// number across restarts of the agent), /metrics and /healthz.
//
// A Server wraps a running workload.Manager. It is an http.Handler, so a
// team can mount it in its own server, or run it with Serve, which shuts
// down cleanly (event streams end, workloads keep running; a restarted
// agent finds them through the manager's store and the runtime). The wire
// types are package agent/api's; package agent/client calls the API in
// typed Go; the OpenAPI document is openapi.json beside this file, checked
// against the routes in a test and served at /v1/openapi.json.
//
// # Credentials
//
// On loopback the API may run open: every caller is the operator. Serve
// refuses any other address without TLS (WithTLS) and credentials: bearer
// tokens (WithTokens) or verified client certificates. A token, or a
// certificate, may act for one tenant: it submits and sees that tenant's
// workloads, records and events only; another tenant's workload is not
// found; node-wide calls (cordon, drain, power, metrics) are refused.
//
// # Errors
//
// Every error answer is JSON (api.Error): a code (invalid, not_found,
// exists, denied, unauthorized, too_large, unplaceable, unavailable,
// timeout, internal) and a message naming the problem and what to do.
// Bodies are read whole, one JSON value, unknown fields refused, within a
// size limit (WithMaxBodyBytes), before anything is done, so a bad request
// creates nothing.
package agent
