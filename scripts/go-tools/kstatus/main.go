// Command kstatus computes what Flux's status library (kstatus, from
// sigs.k8s.io/cli-utils/pkg/kstatus/status) says about Kubernetes objects.
//
// It reads a JSON array of objects on stdin, exactly as the API server returned them, and
// writes a JSON array with one {"status", "message"} (or {"error"}) per object, in order. The
// tests use it to prove what Flux and `kubectl wait`-style tooling make of each TrimbleConnection
// state; it is built from its Go module by scripts/go-tool.sh, never downloaded.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

func main() {
	var raw []json.RawMessage
	if err := json.NewDecoder(os.Stdin).Decode(&raw); err != nil {
		fmt.Fprintf(os.Stderr, "kstatus: stdin is not a JSON array of objects: %v\n", err)
		os.Exit(2)
	}
	results := make([]result, 0, len(raw))
	for _, object := range raw {
		// Unstructured's own decoder keeps integers as int64, as the API machinery does;
		// encoding/json would make metadata.generation a float64, which kstatus rejects.
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(object); err != nil {
			results = append(results, result{Error: err.Error()})
			continue
		}
		computed, err := status.Compute(u)
		if err != nil {
			results = append(results, result{Error: err.Error()})
			continue
		}
		results = append(results, result{Status: computed.Status.String(), Message: computed.Message})
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
		os.Exit(1)
	}
}
