package storetest

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// The suite only catches a store that drops a field if the fixture sets it:
// this fails when a field is added to workload.Workload or Spec and Workload
// (the fixture) is not updated.
func TestWorkloadSetsEveryField(t *testing.T) {
	var zero []string
	walkZero(reflect.ValueOf(Workload("x")), "Workload", &zero)
	assert.Empty(t, zero, "fields left at their zero value by storetest.Workload")
}

func TestWorkloadDiffersByID(t *testing.T) {
	a, b := Workload("a"), Workload("b")
	assert.NotEqual(t, a, b)
	assert.NotEqual(t, a.Spec.GPUs.UUIDs, b.Spec.GPUs.UUIDs)
	assert.Equal(t, a, Workload("a"), "deterministic")
}

func walkZero(v reflect.Value, path string, zero *[]string) {
	switch v.Type() { // values whose insides may be zero when they are not
	case reflect.TypeFor[time.Time](), reflect.TypeFor[netip.Addr]():
		if v.IsZero() || (v.Type() == reflect.TypeFor[time.Time]() && v.Interface().(time.Time).IsZero()) {
			*zero = append(*zero, path)
		}
		return
	}
	if v.IsZero() {
		*zero = append(*zero, path)
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		walkZero(v.Elem(), path, zero)
	case reflect.Struct:
		for i := range v.NumField() {
			walkZero(v.Field(i), path+"."+v.Type().Field(i).Name, zero)
		}
	case reflect.Slice, reflect.Map:
		if v.Len() == 0 {
			*zero = append(*zero, path)
		} else if v.Kind() == reflect.Slice {
			walkZero(v.Index(0), path+"[0]", zero)
		}
	}
}
