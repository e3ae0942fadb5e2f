package dra_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/dynamic-resource-allocation/cel"
	"sigs.k8s.io/yaml"

	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/kubernetes/dra"
)

// objects decodes every document of a manifest file strictly: a field
// the API does not have fails the test.
func objects(t *testing.T, file string) []any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "deploy", file))
	require.NoError(t, err)
	var out []any
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var head struct{ APIVersion, Kind string }
		require.NoError(t, yaml.Unmarshal([]byte(doc), &head))
		var obj any
		switch head.APIVersion + " " + head.Kind {
		case "resource.k8s.io/v1 DeviceClass":
			obj = &resourceapi.DeviceClass{}
		case "resource.k8s.io/v1 ResourceClaimTemplate":
			obj = &resourceapi.ResourceClaimTemplate{}
		case "v1 Pod":
			obj = &corev1.Pod{}
		case "v1 Namespace":
			obj = &corev1.Namespace{}
		case "v1 ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "rbac.authorization.k8s.io/v1 ClusterRole":
			obj = &rbacv1.ClusterRole{}
		case "rbac.authorization.k8s.io/v1 ClusterRoleBinding":
			obj = &rbacv1.ClusterRoleBinding{}
		case "apps/v1 DaemonSet":
			obj = &appsv1.DaemonSet{}
		default:
			t.Fatalf("%s: unexpected %s %s", file, head.APIVersion, head.Kind)
		}
		require.NoError(t, yaml.UnmarshalStrict([]byte(doc), obj), "%s: %s", file, head.Kind)
		out = append(out, obj)
	}
	return out
}

// TestManifestsDecode: every manifest is what the API accepts, field by
// field, and the pieces fit: the DaemonSet runs as the RBAC's account,
// the claim template names a DeviceClass that exists.
func TestManifestsDecode(t *testing.T) {
	var classes []string
	for _, o := range objects(t, "deviceclasses.yaml") {
		classes = append(classes, o.(*resourceapi.DeviceClass).Name)
	}
	for _, o := range objects(t, "claim-training.yaml") {
		if tmpl, ok := o.(*resourceapi.ResourceClaimTemplate); ok {
			for _, r := range tmpl.Spec.Spec.Devices.Requests {
				require.NotNil(t, r.Exactly)
				assert.Contains(t, classes, r.Exactly.DeviceClassName)
			}
			assert.Contains(t, tmpl.Spec.ObjectMeta.Annotations, dra.AnnotationPrice)
		}
	}
	var account string
	for _, o := range objects(t, "rbac.yaml") {
		if sa, ok := o.(*corev1.ServiceAccount); ok {
			account = sa.Name
		}
	}
	ds := objects(t, "daemonset.yaml")[0].(*appsv1.DaemonSet)
	assert.Equal(t, account, ds.Spec.Template.Spec.ServiceAccountName)
}

// TestDeviceClassesSelectTheRightGPUs evaluates each DeviceClass's CEL
// selector, as the scheduler does, against the devices the driver
// publishes for an A40 node and for a node of RTX 3080s on x1 risers.
func TestDeviceClassesSelectTheRightGPUs(t *testing.T) {
	want := map[string]map[string]bool{ // class -> preset -> selected
		"gpufarm-training-24gi":      {sim.PresetA40: true, sim.PresetRTX3080Riser: false},
		"gpufarm-inference":          {sim.PresetA40: true, sim.PresetRTX3080Riser: true},
		"gpufarm-inference-no-riser": {sim.PresetA40: true, sim.PresetRTX3080Riser: false},
		"gpufarm-qlora-13b":          {sim.PresetA40: true, sim.PresetRTX3080Riser: false},
	}
	devices := map[string][]resourceapi.Device{}
	for _, preset := range []string{sim.PresetA40, sim.PresetRTX3080Riser} {
		devices[preset] = newNode(t, preset, 1, false).drv.Published()
	}
	compiler := cel.GetCompiler(cel.Features{})
	for _, o := range objects(t, "deviceclasses.yaml") {
		class := o.(*resourceapi.DeviceClass)
		t.Run(class.Name, func(t *testing.T) {
			require.Contains(t, want, class.Name, "a class the test does not know")
			for preset, devs := range devices {
				selected := true
				for _, sel := range class.Spec.Selectors {
					prog := compiler.CompileCELExpression(sel.CEL.Expression, cel.Options{})
					require.Nil(t, prog.Error, "%s", sel.CEL.Expression)
					ok, _, err := prog.DeviceMatches(context.Background(), cel.Device{Driver: dra.DriverName,
						Attributes: devs[0].Attributes, Capacity: devs[0].Capacity})
					require.NoError(t, err)
					selected = selected && ok
				}
				assert.Equal(t, want[class.Name][preset], selected, "%s on %s", class.Name, preset)
			}
		})
	}
}
