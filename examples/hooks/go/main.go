// Command example-hook is an example manager-operator hook (protocol v1), standard library only.
//
// It implements the whole hook contract of docs/hooks.md:
//
//   - signed calls (Standard Webhooks): with HOOK_SIGNING_SECRET set, every call must carry a
//     valid webhook-signature over the raw body, made within 5 minutes; otherwise 401;
//   - fencing: the highest fencingToken accepted per (manager namespace, manager name, worker)
//     is remembered; a call with a lower one comes from a deposed leader and is refused with 409;
//   - idempotency: the deliveryIds of accepted calls are remembered (the last 10,000, for 10
//     minutes); a repeat is answered 200 without acting again;
//   - Sync stores the object in the "external system", Deleted removes it (a Deleted for an
//     object the system does not hold is a success: deleting is idempotent).
//
// The "external system" is an in-memory map keyed by <apiVersion>/<kind>/<namespace>/<name>,
// served on GET /state and, with -state-file, written to a JSON file (atomically) after every
// change.
//
//	HOOK_SIGNING_SECRET='whsec_...' example-hook --listen 127.0.0.1:8080 --state-file state.json
//
// Every POST (any path) is a hook call; GET /state is the state; GET /healthz answers 200. The
// first line printed on stdout is "listening on http://HOST:PORT" (useful with port 0).
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"time"
)

// MaxBodyBytes: larger bodies are refused (413). Kubernetes objects are at most ~1.5 MiB.
const MaxBodyBytes = 4 << 20

func main() {
	listen := flag.String("listen", envOr("HOOK_LISTEN", "127.0.0.1:8080"),
		"HOST:PORT to serve on (env HOOK_LISTEN; port 0 = any free port)")
	stateFile := flag.String("state-file", os.Getenv("HOOK_STATE_FILE"),
		"JSON file holding the state, read at start, rewritten after every change (env HOOK_STATE_FILE)")
	flag.Parse()
	log.SetPrefix("[hook] ")
	log.SetFlags(0)

	// From the environment, not a flag: command lines are visible to every user of the host.
	keys, err := ParseSecrets(os.Getenv("HOOK_SIGNING_SECRET"))
	if err != nil {
		log.Fatalf("HOOK_SIGNING_SECRET: %v", err)
	}
	if len(keys) == 0 {
		log.Print("WARNING: HOOK_SIGNING_SECRET is not set: accepting unsigned calls from anyone")
	}
	hook, err := NewHook(keys, *stateFile)
	if err != nil {
		log.Fatalf("loading the state: %v", err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/", hook.ServeCall)
	mux.HandleFunc("/state", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			hook.ServeCall(w, r) // a POST to /state is a call like any other
			return
		}
		answer(w, http.StatusOK, hook.Snapshot())
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, struct{}{})
	})

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on http://%s\n", ln.Addr())
	server := &http.Server{
		Handler: mux,
		// A client that stops sending mid-request gives up its connection after this long.
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	log.Fatal(server.Serve(ln))
}

// ServeCall answers one hook call.
func (h *Hook) ServeCall(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		answer(w, http.StatusMethodNotAllowed, map[string]string{"error": "POST a hook call"})
		return
	}
	err := h.serveCall(w, r)
	var refused *Refused
	switch {
	case err == nil:
		answer(w, http.StatusOK, struct{}{})
		return
	case errors.As(err, &refused):
		switch refused.Status {
		case http.StatusUnauthorized:
			h.Count(counterUnauth)
		case http.StatusBadRequest, http.StatusLengthRequired, http.StatusRequestEntityTooLarge:
			h.Count(counterInvalid)
		}
		log.Printf("refused %d: %s", refused.Status, refused.Message)
		answer(w, refused.Status, map[string]string{"error": refused.Message})
	default: // e.g. the state file cannot be written
		log.Printf("failed: %v", err)
		answer(w, http.StatusInternalServerError, map[string]string{"error": "internal error"})
	}
}

func (h *Hook) serveCall(w http.ResponseWriter, r *http.Request) error {
	// Refuse an oversized body by its declared size, before reading it; MaxBytesReader also
	// stops a body that is longer than it said, or chunked and too long.
	if r.ContentLength > MaxBodyBytes {
		return refuse(http.StatusRequestEntityTooLarge, "body larger than %d bytes", MaxBodyBytes)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return refuse(http.StatusRequestEntityTooLarge, "body larger than %d bytes", MaxBodyBytes)
	} else if err != nil {
		return refuse(http.StatusBadRequest, "reading the body: %v", err)
	}
	// The signature is checked over these exact bytes, before they are decoded.
	return h.Handle(r.Header, body, time.Now())
}

func answer(w http.ResponseWriter, status int, payload any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // plain "<" in messages, not "\u003c"
	enc.Encode(payload)
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
