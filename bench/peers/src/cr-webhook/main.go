// Command cr-webhook is the controller-runtime peer of the admission benchmark (issue 18): a
// controller-runtime webhook server (webhook.NewServer, TLS from --cert-dir) serving one
// validating admission.Webhook at /validate for ManagerConfig AdmissionReviews (v1).
//
// The work it does per review: controller-runtime decodes the AdmissionReview; the handler
// decodes request.object (encoding/json, unknown fields ignored) and checks
//
//   - spec.leaderElection durations parse as Go durations (defaults 15s/10s/2s) and are > 0;
//   - leaseDuration between 1s and 1h and a whole number of seconds; retryPeriod >= 100ms;
//   - leaseDuration > renewDeadline > 1.2 × retryPeriod (client-go's rules);
//   - workers: at least one; each named, names unique; watch.apiVersion and watch.kind set;
//     watch.labelSelector parses (labels.Parse); hook.url an absolute http or https URL;
//
// and answers allowed, or denied with every violation in the message. It does not do what the
// operator's webhook also does (strict decoding that names unknown fields, the hook URL policy
// against metadata and link-local addresses, service account and RBAC checks, the remaining
// fields' ranges): the comparison is of the same leader-election rules, not of equal work.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

type leaderElection struct {
	LeaseDuration string `json:"leaseDuration"`
	RenewDeadline string `json:"renewDeadline"`
	RetryPeriod   string `json:"retryPeriod"`
}

type worker struct {
	Name  string `json:"name"`
	Watch struct {
		APIVersion    string `json:"apiVersion"`
		Kind          string `json:"kind"`
		LabelSelector string `json:"labelSelector"`
	} `json:"watch"`
	Hook struct {
		URL string `json:"url"`
	} `json:"hook"`
}

type managerConfig struct {
	Spec struct {
		LeaderElection leaderElection `json:"leaderElection"`
		Workers        []worker       `json:"workers"`
	} `json:"spec"`
}

func duration(out *[]string, field, raw, def string) (time.Duration, bool) {
	if raw == "" {
		raw = def
	}
	d, err := time.ParseDuration(raw)
	if err != nil {
		*out = append(*out, fmt.Sprintf("%s: %v", field, err))
		return 0, false
	}
	if d <= 0 {
		*out = append(*out, fmt.Sprintf("%s: must be greater than 0, got %s", field, d))
		return 0, false
	}
	return d, true
}

func validate(mc *managerConfig) []string {
	var out []string
	const le = "spec.leaderElection"
	l := mc.Spec.LeaderElection
	lease, okL := duration(&out, le+".leaseDuration", l.LeaseDuration, "15s")
	renew, okR := duration(&out, le+".renewDeadline", l.RenewDeadline, "10s")
	retry, okY := duration(&out, le+".retryPeriod", l.RetryPeriod, "2s")
	if okL {
		if lease < time.Second || lease > time.Hour {
			out = append(out, fmt.Sprintf("%s.leaseDuration: must be between 1s and 1h0m0s, got %s", le, lease))
		} else if lease%time.Second != 0 {
			out = append(out, fmt.Sprintf("%s.leaseDuration: must be a whole number of seconds, got %s", le, lease))
		}
	}
	if okY && retry < 100*time.Millisecond {
		out = append(out, fmt.Sprintf("%s.retryPeriod: must be at least 100ms, got %s", le, retry))
	}
	if okL && okR && lease <= renew {
		out = append(out, fmt.Sprintf("%s.renewDeadline: must be less than leaseDuration (%s), got %s", le, lease, renew))
	}
	// client-go: renewDeadline <= 1.2 × retryPeriod is an error; exact in integers.
	if okR && okY && 5*int64(renew) <= 6*int64(retry) {
		out = append(out, fmt.Sprintf("%s.renewDeadline: must be greater than 1.2 × retryPeriod (%s), got %s", le, time.Duration(6*int64(retry)/5), renew))
	}
	if len(mc.Spec.Workers) == 0 {
		out = append(out, "spec.workers: at least one worker is required")
	}
	seen := map[string]bool{}
	for i, w := range mc.Spec.Workers {
		f := fmt.Sprintf("spec.workers[%d]", i)
		if w.Name == "" {
			out = append(out, f+".name: is required")
		} else if seen[w.Name] {
			out = append(out, fmt.Sprintf("%s.name: duplicate worker name %q", f, w.Name))
		}
		seen[w.Name] = true
		if w.Watch.APIVersion == "" {
			out = append(out, f+".watch.apiVersion: is required")
		}
		if w.Watch.Kind == "" {
			out = append(out, f+".watch.kind: is required")
		}
		if w.Watch.LabelSelector != "" {
			if _, err := labels.Parse(w.Watch.LabelSelector); err != nil {
				out = append(out, fmt.Sprintf("%s.watch.labelSelector: %v", f, err))
			}
		}
		u, err := url.Parse(w.Hook.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			out = append(out, fmt.Sprintf("%s.hook.url: must be an absolute http or https URL, got %q", f, w.Hook.URL))
		}
	}
	return out
}

func handle(_ context.Context, req admission.Request) admission.Response {
	var mc managerConfig
	if err := json.Unmarshal(req.Object.Raw, &mc); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	if v := validate(&mc); len(v) > 0 {
		return admission.Denied(strings.Join(v, "; "))
	}
	return admission.Allowed("")
}

func main() {
	var (
		host, certDir, certName, keyName string
		port                             int
	)
	flag.StringVar(&host, "host", "127.0.0.1", "listen address")
	flag.IntVar(&port, "port", 9443, "listen port")
	flag.StringVar(&certDir, "cert-dir", "", "directory with the serving certificate and key (required)")
	flag.StringVar(&certName, "cert-name", "tls.crt", "certificate file in --cert-dir")
	flag.StringVar(&keyName, "key-name", "tls.key", "key file in --cert-dir")
	flag.Parse()
	if certDir == "" {
		fmt.Fprintln(os.Stderr, "cr-webhook: --cert-dir is required")
		os.Exit(2)
	}
	srv := webhook.NewServer(webhook.Options{
		Host: host, Port: port, CertDir: certDir, CertName: certName, KeyName: keyName,
	})
	srv.Register("/validate", &webhook.Admission{Handler: admission.HandlerFunc(handle)})
	if err := srv.Start(ctrl.SetupSignalHandler()); err != nil {
		fmt.Fprintf(os.Stderr, "cr-webhook: %v\n", err)
		os.Exit(1)
	}
}
