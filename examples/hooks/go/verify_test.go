package main

import (
	"net/http"
	"testing"
	"time"
)

// The known vector of the Standard Webhooks reference libraries.
func TestVerifySignatureKnownVector(t *testing.T) {
	keys, err := ParseSecrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"test": 2432232314}`)
	header := func(id, sig string) http.Header {
		h := http.Header{}
		h.Set("webhook-id", id)
		h.Set("webhook-timestamp", "1614265330")
		if sig != "" {
			h.Set("webhook-signature", sig)
		}
		return h
	}
	good := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	at := time.Unix(1614265330, 0)
	for _, tc := range []struct {
		name string
		h    http.Header
		body []byte
		now  time.Time
		ok   bool
	}{
		{"valid", header("msg_p5jXN8AQM9LWM0D4loKWxJek", good), body, at, true},
		{"two signatures", header("msg_p5jXN8AQM9LWM0D4loKWxJek", "v1,AAAA "+good), body, at, true},
		{"changed body", header("msg_p5jXN8AQM9LWM0D4loKWxJek", good), []byte(`{"test": 2147483647}`), at, false},
		{"changed id", header("msg_other", good), body, at, false},
		{"too late", header("msg_p5jXN8AQM9LWM0D4loKWxJek", good), body, at.Add(Tolerance + time.Second), false},
		{"too early", header("msg_p5jXN8AQM9LWM0D4loKWxJek", good), body, at.Add(-Tolerance - time.Second), false},
		{"unsigned", header("msg_p5jXN8AQM9LWM0D4loKWxJek", ""), body, at, false},
		{"other version", header("msg_p5jXN8AQM9LWM0D4loKWxJek", "v2"+good[2:]), body, at, false},
	} {
		err := VerifySignature(keys, tc.h, tc.body, tc.now)
		if (err == nil) != tc.ok {
			t.Errorf("%s: got %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
