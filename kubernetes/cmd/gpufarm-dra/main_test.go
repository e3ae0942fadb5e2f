package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestRefusesWhatItCannotRunWith: without a node name or a cluster it
// says what to give, before touching any GPU.
func TestRefusesWhatItCannotRunWith(t *testing.T) {
	t.Setenv("NODE_NAME", "")
	var out bytes.Buffer
	for _, tc := range []struct {
		args []string
		says string
	}{
		{nil, "-node-name is empty"},
		{[]string{"-node-name", "n1", "extra"}, `unexpected arguments ["extra"]`},
		{[]string{"-node-name", "n1", "-kubeconfig", "/nonexistent"}, "give -kubeconfig outside a cluster"},
		{[]string{"-node-name", "n1", "-kubeconfig", "/dev/null", "-backend", "amd"}, `-backend "amd"`},
	} {
		assert.ErrorContains(t, run(context.Background(), tc.args, &out), tc.says, "%v", tc.args)
	}
}
