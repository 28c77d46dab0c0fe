package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Tolerance is how far webhook-timestamp may be from our clock (Standard Webhooks' default).
// It stops the replay of a captured call once its id has been forgotten.
const Tolerance = 5 * time.Minute

// ParseSecrets turns HOOK_SIGNING_SECRET into the keys to accept. The value is space-separated,
// so that during a rotation the hook can accept the old and the new secret. `whsec_<base64>` is
// the Standard Webhooks form (the key is the decoded bytes); any other value is used as the key
// byte for byte, as the operator does.
func ParseSecrets(value string) ([][]byte, error) {
	var keys [][]byte
	for _, secret := range strings.Fields(value) {
		if b64, ok := strings.CutPrefix(secret, "whsec_"); ok {
			key, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				return nil, fmt.Errorf("whsec_ is not followed by base64: %w", err)
			}
			keys = append(keys, key)
		} else {
			keys = append(keys, []byte(secret))
		}
	}
	return keys, nil
}

// VerifySignature returns nil when one of keys signed this exact call (headers and raw body)
// within the tolerance of now.
func VerifySignature(keys [][]byte, h http.Header, body []byte, now time.Time) error {
	id := h.Get("webhook-id")
	timestamp := h.Get("webhook-timestamp")
	signatures := h.Get("webhook-signature")
	if id == "" || timestamp == "" || signatures == "" {
		return fmt.Errorf("missing webhook-id, webhook-timestamp or webhook-signature")
	}
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp is not an integer")
	}
	if d := now.Sub(time.Unix(ts, 0)); d > Tolerance || d < -Tolerance {
		return fmt.Errorf("webhook-timestamp is more than 5 minutes away from our clock")
	}
	// The signed content is "{id}.{timestamp}.{body}": the id and the time cannot be changed
	// without breaking the signature, nor can a single byte of the body.
	signed := make([]byte, 0, len(id)+len(timestamp)+2+len(body))
	signed = append(signed, id...)
	signed = append(signed, '.')
	signed = append(signed, timestamp...)
	signed = append(signed, '.')
	signed = append(signed, body...)
	for _, key := range keys {
		mac := hmac.New(sha256.New, key)
		mac.Write(signed)
		expected := []byte(base64.StdEncoding.EncodeToString(mac.Sum(nil)))
		// The header is a space-separated list: two entries while the operator rotates keys.
		for _, entry := range strings.Split(signatures, " ") {
			version, sig, _ := strings.Cut(entry, ",")
			// hmac.Equal takes the same time wherever the first difference is, so a forger
			// cannot find the right signature byte by byte by timing our answers.
			if version == "v1" && hmac.Equal([]byte(sig), expected) {
				return nil
			}
		}
	}
	return fmt.Errorf("no webhook-signature matches")
}
