package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// Protocol is the apiVersion of the calls this hook understands.
const Protocol = "hooks.manager-operator.io/v1"

// Accepted delivery ids are kept for twice the signature tolerance (a replay older than that
// fails the timestamp check anyway); the count bound keeps memory bounded under a flood of calls.
const (
	deliveryIDTTL  = 2 * Tolerance
	maxDeliveryIDs = 10_000
)

// The call types of protocol v1.
const (
	typeSync    = "Sync"    // the object exists: created, changed, resynced, or a new leader
	typeDeleted = "Deleted" // the object was deleted; `object` is its last known state
)

// The counters served on GET /state.
const (
	counterSyncs   = "syncs"        // Sync calls acted on
	counterDeletes = "deletes"      // Deleted calls acted on (including for objects not held)
	counterDups    = "duplicates"   // repeats of an accepted deliveryId, answered without acting
	counterFenced  = "fenced"       // refused with 409: lower fencingToken than one accepted
	counterUnauth  = "unauthorized" // refused with 401: no valid signature
	counterInvalid = "invalid"      // refused with 400, 411 or 413
)

// Call is the part of a hook call this hook uses. encoding/json ignores unknown fields: the
// protocol only ever adds fields within one apiVersion.
type Call struct {
	APIVersion      string  `json:"apiVersion"`
	Type            string  `json:"type"`
	DeliveryID      string  `json:"deliveryId"`
	Attempt         int     `json:"attempt"`
	ResourceVersion string  `json:"resourceVersion"`
	Generation      *int64  `json:"generation"`
	Manager         *Ref    `json:"manager"`
	Worker          *string `json:"worker"`
	FencingToken    *int64  `json:"fencingToken"`
	Holder          string  `json:"holder"`
	Object          *Object `json:"object"`
}

// Ref names the ManagerConfig a call comes from.
type Ref struct {
	Namespace *string `json:"namespace"`
	Name      *string `json:"name"`
}

// Object is the watched object; only the fields the external system keeps are decoded.
type Object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   *struct {
		Namespace       string `json:"namespace"`
		Name            string `json:"name"`
		UID             string `json:"uid"`
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	Data json.RawMessage `json:"data,omitempty"`
	Spec json.RawMessage `json:"spec,omitempty"`
}

// Key is `<apiVersion>/<kind>/<namespace>/<name>` (namespace empty for cluster-scoped kinds).
func (o *Object) Key() string {
	return fmt.Sprintf("%s/%s/%s/%s", o.APIVersion, o.Kind, o.Metadata.Namespace, o.Metadata.Name)
}

// Entry is what the external system holds for one object.
type Entry struct {
	ResourceVersion string          `json:"resourceVersion"`
	UID             string          `json:"uid,omitempty"`
	Data            json.RawMessage `json:"data,omitempty"`
	Spec            json.RawMessage `json:"spec,omitempty"`
	DeliveryID      string          `json:"deliveryId"`
	FencingToken    int64           `json:"fencingToken"`
}

// State is the hook's whole state, as served on GET /state and written to the state file.
// The state file also holds the fencing tokens and the accepted delivery ids, so a restarted
// hook keeps refusing what it refused before.
type State struct {
	Objects       map[string]Entry `json:"objects"`
	FencingTokens map[string]int64 `json:"fencingTokens"` // "namespace/name/worker" -> highest accepted
	Counters      map[string]int64 `json:"counters"`
	DeliveryIDs   map[string]int64 `json:"deliveryIds"` // accepted id -> unix seconds accepted
}

// Refused is a call the hook does not act on: HTTP Status with {"error": Message}.
type Refused struct {
	Status  int
	Message string
}

func (r *Refused) Error() string { return r.Message }

func refuse(status int, format string, args ...any) error {
	return &Refused{Status: status, Message: fmt.Sprintf(format, args...)}
}

// Hook holds the external system, the fencing tokens and the accepted delivery ids.
type Hook struct {
	keys      [][]byte
	stateFile string

	// One lock around each whole call: check, act, remember. Two calls for one object never
	// come at once, but calls for different objects (worker concurrency > 1) do, and all of
	// them read and move the fencing token.
	mu    sync.Mutex
	state State
	order []string // accepted delivery ids, oldest first (for eviction)
}

// NewHook loads stateFile when it exists.
func NewHook(keys [][]byte, stateFile string) (*Hook, error) {
	h := &Hook{keys: keys, stateFile: stateFile, state: State{
		Objects:       map[string]Entry{},
		FencingTokens: map[string]int64{},
		Counters: map[string]int64{counterSyncs: 0, counterDeletes: 0, counterDups: 0,
			counterFenced: 0, counterUnauth: 0, counterInvalid: 0},
		DeliveryIDs: map[string]int64{},
	}}
	if stateFile == "" {
		return h, nil
	}
	data, err := os.ReadFile(stateFile)
	if errors.Is(err, os.ErrNotExist) {
		return h, nil
	} else if err != nil {
		return nil, err
	}
	var saved State
	if err := json.Unmarshal(data, &saved); err != nil {
		return nil, fmt.Errorf("%s: %w", stateFile, err)
	}
	for k, v := range saved.Objects {
		h.state.Objects[k] = v
	}
	for k, v := range saved.FencingTokens {
		h.state.FencingTokens[k] = v
	}
	for k, v := range saved.Counters {
		h.state.Counters[k] = v
	}
	for id, at := range saved.DeliveryIDs {
		h.state.DeliveryIDs[id] = at
		h.order = append(h.order, id)
	}
	// Oldest first.
	sort.Slice(h.order, func(i, j int) bool {
		return h.state.DeliveryIDs[h.order[i]] < h.state.DeliveryIDs[h.order[j]]
	})
	return h, nil
}

// Handle processes one hook call: its headers and raw body. A nil error means 200 {}.
func (h *Hook) Handle(header http.Header, body []byte, now time.Time) error {
	// 1. Authenticity, before anything else reads the body: a forged call must not be able to
	// move the fencing token, fill the id store or touch the external system.
	if len(h.keys) > 0 {
		if err := VerifySignature(h.keys, header, body, now); err != nil {
			return refuse(http.StatusUnauthorized, "%v", err)
		}
	}
	call, err := parseCall(body, header)
	if err != nil {
		return err
	}
	scope := *call.Manager.Namespace + "/" + *call.Manager.Name + "/" + *call.Worker
	token := *call.FencingToken

	h.mu.Lock()
	defer h.mu.Unlock()
	h.forgetOldDeliveries(now)
	// 2. Idempotency: a retry of a call we already acted on (our 200 was lost or came too
	// late), or a replay. Answer success so the operator stops retrying; do not act twice.
	if _, seen := h.state.DeliveryIDs[call.DeliveryID]; seen {
		h.state.Counters[counterDups]++
		log.Printf("duplicate %s: already acted on", call.DeliveryID)
		return nil
	}
	// 3. Fencing: a leader that lost its Lease may still be sending. Its token is lower than
	// its successor's, so once we accepted the successor we refuse it.
	if highest, ok := h.state.FencingTokens[scope]; ok && token < highest {
		h.state.Counters[counterFenced]++
		return refuse(http.StatusConflict, "stale fencingToken %d < %d for %s", token, highest, scope)
	}
	// 4. Act on a copy: if saving fails the call is refused (500) and nothing is remembered,
	// so the operator's retry (same deliveryId) is processed again.
	next := h.state.clone()
	key := call.Object.Key()
	var action string
	switch call.Type {
	case typeSync:
		rv := call.ResourceVersion
		if rv == "" {
			rv = call.Object.Metadata.ResourceVersion
		}
		next.Objects[key] = Entry{ResourceVersion: rv, UID: call.Object.Metadata.UID,
			Data: call.Object.Data, Spec: call.Object.Spec, DeliveryID: call.DeliveryID, FencingToken: token}
		next.Counters[counterSyncs]++
		action = fmt.Sprintf("sync %s rv=%s", key, rv)
	case typeDeleted:
		held, ok := next.Objects[key]
		uid := call.Object.Metadata.UID
		// A Deleted about an earlier object of the same name (its uid differs from the one we
		// hold) must not remove the object that replaced it.
		if ok && (uid == "" || held.UID == "" || held.UID == uid) {
			delete(next.Objects, key)
			action = "delete " + key
		} else {
			action = "delete " + key + ": not held, nothing to do"
		}
		next.Counters[counterDeletes]++
	}
	next.FencingTokens[scope] = token // not lower than the highest (checked above)
	// 5. Remember the id only now that the call was acted on successfully.
	next.DeliveryIDs[call.DeliveryID] = now.Unix()
	if err := h.save(&next); err != nil {
		return fmt.Errorf("saving the state: %w", err)
	}
	h.state = next
	h.order = append(h.order, call.DeliveryID)
	log.Printf("%s (token %d, %s, attempt %d)", action, token, call.DeliveryID, call.Attempt)
	return nil
}

// parseCall decodes and checks the body; a *Refused(400) when it is unusable.
func parseCall(body []byte, header http.Header) (*Call, error) {
	var call Call
	if err := json.Unmarshal(body, &call); err != nil {
		return nil, refuse(http.StatusBadRequest, "body is not a valid call: %v", err)
	}
	// A later protocol version may change what fields mean: refuse rather than guess.
	if call.APIVersion != Protocol {
		return nil, refuse(http.StatusBadRequest, "unsupported apiVersion %q, want %s", call.APIVersion, Protocol)
	}
	// Unknown types are refused (and so retried) instead of being silently dropped.
	if call.Type != typeSync && call.Type != typeDeleted {
		return nil, refuse(http.StatusBadRequest, "unknown type %q", call.Type)
	}
	if call.DeliveryID == "" {
		return nil, refuse(http.StatusBadRequest, "missing deliveryId")
	}
	if id := header.Get("webhook-id"); id != "" && id != call.DeliveryID {
		return nil, refuse(http.StatusBadRequest, "deliveryId differs from the webhook-id header")
	}
	if call.Manager == nil || call.Manager.Namespace == nil || call.Manager.Name == nil || call.Worker == nil {
		return nil, refuse(http.StatusBadRequest, "missing manager.namespace, manager.name or worker")
	}
	// *int64: an absent token is an error, not token 0; a fractional one fails to decode.
	if call.FencingToken == nil {
		return nil, refuse(http.StatusBadRequest, "missing fencingToken")
	}
	if o := call.Object; o == nil || o.Metadata == nil || o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
		return nil, refuse(http.StatusBadRequest, "object lacks apiVersion, kind or metadata.name")
	}
	return &call, nil
}

func (h *Hook) forgetOldDeliveries(now time.Time) {
	for len(h.order) > 0 {
		oldest := h.order[0]
		if now.Unix()-h.state.DeliveryIDs[oldest] <= int64(deliveryIDTTL/time.Second) && len(h.order) <= maxDeliveryIDs {
			return
		}
		delete(h.state.DeliveryIDs, oldest)
		h.order = h.order[1:]
	}
}

func (s *State) clone() State {
	c := State{Objects: map[string]Entry{}, FencingTokens: map[string]int64{},
		Counters: map[string]int64{}, DeliveryIDs: map[string]int64{}}
	for k, v := range s.Objects {
		c.Objects[k] = v
	}
	for k, v := range s.FencingTokens {
		c.FencingTokens[k] = v
	}
	for k, v := range s.Counters {
		c.Counters[k] = v
	}
	for k, v := range s.DeliveryIDs {
		c.DeliveryIDs[k] = v
	}
	return c
}

// save writes the state file atomically: a reader sees the old file or the new one, never half
// of one (write a temporary file in the same directory, fsync, rename over).
func (h *Hook) save(s *State) error {
	if h.stateFile == "" {
		return nil
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(h.stateFile), ".state-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), h.stateFile)
}

// Count adds one to a counter (refusals counted outside Handle's lock).
func (h *Hook) Count(counter string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.state.Counters[counter]++
}

// Snapshot is the state for GET /state; the delivery ids themselves are replaced by their
// number.
func (h *Hook) Snapshot() map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.state.clone()
	return map[string]any{
		"objects":       s.Objects,
		"fencingTokens": s.FencingTokens,
		"counters":      s.Counters,
		"deliveryIds":   len(s.DeliveryIDs),
	}
}
