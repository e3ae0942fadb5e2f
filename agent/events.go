package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gpufarm/gpufarm/agent/api"
)

// events streams the manager's events as Server-Sent Events: each has its
// sequence number as id, its type as event and its JSON as data. A client
// that reconnects with Last-Event-ID (or ?after=) gets what it missed,
// also across restarts of the agent, since the manager's store keeps the
// event log. A tenant's token gets its own workloads' events only.
func (s *Server) events(c caller, w http.ResponseWriter, r *http.Request) error {
	after, err := resumeFrom(r)
	if err != nil {
		return err
	}
	select {
	case <-s.done:
		return fail(http.StatusServiceUnavailable, api.CodeUnavailable, "the agent is shutting down: reconnect to the next one")
	default:
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() { // ends with the request or at shutdown
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	ch := s.m.Watch(ctx, after)
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // proxies must not hold events back
	w.WriteHeader(http.StatusOK)
	// Reconnect after a second when the stream ends.
	if _, err := fmt.Fprint(w, "retry: 1000\n\n"); err != nil {
		return nil
	}
	_ = rc.Flush()
	ping := time.NewTicker(s.o.ping)
	defer ping.Stop()
	var buf []byte
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return nil // the manager stopped: the client resumes later
			}
			if !c.sees(ev.Tenant) || (!c.operator() && ev.ID == "") {
				continue // another tenant's, or the node's
			}
			data, err := json.Marshal(apiEvent(ev))
			if err != nil {
				return nil
			}
			buf = append(buf[:0], "id: "...)
			buf = strconv.AppendUint(buf, ev.Seq, 10)
			buf = append(buf, "\nevent: "...)
			buf = append(buf, ev.Type...)
			buf = append(buf, "\ndata: "...)
			buf = append(buf, data...)
			buf = append(buf, "\n\n"...)
			if _, err := w.Write(buf); err != nil {
				return nil
			}
			if err := rc.Flush(); err != nil {
				return nil
			}
		case <-ping.C:
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil {
				return nil
			}
			_ = rc.Flush()
		case <-ctx.Done():
			return nil
		}
	}
}

// resumeFrom is the sequence number to resume after: the larger of
// Last-Event-ID and ?after=.
func resumeFrom(r *http.Request) (uint64, error) {
	var after uint64
	for name, v := range map[string]string{"Last-Event-ID": r.Header.Get("Last-Event-ID"), "after": r.URL.Query().Get("after")} {
		if v == "" {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fail(http.StatusBadRequest, api.CodeInvalid, "%s %q: give the sequence number of the last event seen", name, v)
		}
		after = max(after, n)
	}
	return after, nil
}
