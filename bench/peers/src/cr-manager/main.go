// Command cr-manager is the controller-runtime peer of the benchmarks (issue 18): a
// controller-runtime Manager with leader election on a Lease and one leader-only Runnable that
// calls an HTTP hook on a fixed cadence, as a manager-operator worker does on resyncPeriod.
//
// The same source is built against each controller-runtime version under bench/peers/
// (bench/peers/build.sh), so the versions differ only in the library.
//
// While it leads, the Runnable POSTs at once when it starts, then every --hook-every:
//
//	{"holder":IDENTITY,"fencingToken":0,"source":"controller-runtime",
//	 "manager":{"name":LEASE_NAME},"object":{"metadata":{"name":LEASE_NAME}}}
//
// (no fencing token: controller-runtime does not give its Runnables one; the harness only needs
// holder and arrival time). If Manager.Start returns, the process prints the error to stderr
// and on stdout as {"event":"start_returned","error":...} and exits 1. stdout also carries
// {"event":"started"} right before Start and {"event":"leading"} when the Runnable starts.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

var outMu sync.Mutex

// emit prints one JSON line to stdout; "t" is the wall clock in unix milliseconds.
func emit(fields map[string]any) {
	fields["t"] = time.Now().UnixMilli()
	b, err := json.Marshal(fields)
	if err != nil {
		panic(err)
	}
	outMu.Lock()
	defer outMu.Unlock()
	_, _ = os.Stdout.Write(append(b, '\n'))
}

// hookRunnable is leader-only (NeedLeaderElection true): it runs only while this replica leads.
type hookRunnable struct {
	url      string
	every    time.Duration
	identity string
	lease    string
	client   *http.Client
}

func (h *hookRunnable) NeedLeaderElection() bool { return true }

func (h *hookRunnable) Start(ctx context.Context) error {
	emit(map[string]any{"event": "leading", "identity": h.identity})
	if h.url == "" {
		<-ctx.Done()
		return nil
	}
	body, err := json.Marshal(map[string]any{
		"holder":       h.identity,
		"fencingToken": 0,
		"source":       "controller-runtime",
		"manager":      map[string]any{"name": h.lease},
		"object":       map[string]any{"metadata": map[string]any{"name": h.lease}},
	})
	if err != nil {
		return err
	}
	t := time.NewTicker(h.every)
	defer t.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
			if resp, err := h.client.Do(req); err == nil {
				_ = resp.Body.Close()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func main() {
	var (
		kubeconfig, namespace, name, identity, hookURL string
		leaseDuration, renewDeadline, retryPeriod      time.Duration
		hookEvery                                      time.Duration
		releaseOnCancel                                bool
	)
	flag.StringVar(&namespace, "lease-namespace", "", "namespace of the Lease (required)")
	flag.StringVar(&name, "lease-name", "", "name of the Lease (required)")
	flag.StringVar(&identity, "identity", "", "holder identity (required)")
	flag.DurationVar(&leaseDuration, "lease-duration", 15*time.Second, "LeaseDuration")
	flag.DurationVar(&renewDeadline, "renew-deadline", 10*time.Second, "RenewDeadline")
	flag.DurationVar(&retryPeriod, "retry-period", 2*time.Second, "RetryPeriod")
	flag.BoolVar(&releaseOnCancel, "release-on-cancel", false, "LeaderElectionReleaseOnCancel")
	flag.StringVar(&hookURL, "hook-url", "", "URL the leader-only Runnable POSTs to (none: it only waits)")
	flag.DurationVar(&hookEvery, "hook-every", time.Second, "cadence of the hook calls")
	// --kubeconfig is registered by controller-runtime's client/config package (on
	// flag.CommandLine, at init).
	flag.Parse()
	if k := flag.Lookup("kubeconfig"); k != nil {
		kubeconfig = k.Value.String()
	}
	if kubeconfig == "" || namespace == "" || name == "" || identity == "" {
		fmt.Fprintln(os.Stderr, "cr-manager: --kubeconfig, --lease-namespace, --lease-name and --identity are required")
		os.Exit(2)
	}

	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cr-manager: %v\n", err)
		os.Exit(2)
	}
	mgr, err := ctrl.NewManager(cfg, manager.Options{
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:        "0",
		LeaderElection:                true,
		LeaderElectionResourceLock:    "leases",
		LeaderElectionNamespace:       namespace,
		LeaderElectionID:              name,
		LeaderElectionReleaseOnCancel: releaseOnCancel,
		LeaseDuration:                 &leaseDuration,
		RenewDeadline:                 &renewDeadline,
		RetryPeriod:                   &retryPeriod,
	})
	if err != nil {
		emit(map[string]any{"event": "new_manager_failed", "error": err.Error()})
		fmt.Fprintf(os.Stderr, "cr-manager: NewManager: %v\n", err)
		os.Exit(1)
	}
	// The Manager's own leader-election identity is hostname_uuid; the Runnable reports ours.
	if err := mgr.Add(&hookRunnable{
		url: hookURL, every: hookEvery, identity: identity, lease: name,
		client: &http.Client{Timeout: 5 * time.Second},
	}); err != nil {
		fmt.Fprintf(os.Stderr, "cr-manager: Add: %v\n", err)
		os.Exit(1)
	}
	emit(map[string]any{"event": "started", "identity": identity})
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		emit(map[string]any{"event": "start_returned", "error": err.Error()})
		fmt.Fprintf(os.Stderr, "cr-manager: Start: %v\n", err)
		os.Exit(1)
	}
	emit(map[string]any{"event": "exited"})
}
