package agent

import (
	"bytes"
	"flag"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite openapi.json from the routes and the api types")

// TestOpenAPIDocument: the document kept in the repository is the one the
// route table and the wire types give, so it cannot drift from the
// handlers. Run with -update after changing either.
func TestOpenAPIDocument(t *testing.T) {
	got, err := generateOpenAPI()
	require.NoError(t, err)
	got = append(got, '\n')
	if *update {
		require.NoError(t, os.WriteFile("openapi.json", got, 0o644))
	}
	require.True(t, bytes.Equal(got, openapiDoc),
		"openapi.json is not what the routes and the api types give: run go test ./agent -run TestOpenAPIDocument -update and review the diff")
}
