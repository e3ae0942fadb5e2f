// Package ociimage builds small OCI images from Go main packages of this
// module, written as OCI image-layout tars.
//
// No registry is reachable where the SDK's tests and demos run, so test
// programs (internal/fakeminer, internal/faketrainer) are compiled with
// CGO_ENABLED=0 into a single static binary, wrapped in a one-layer image and
// imported into containerd with client.Import. The output is deterministic:
// fixed modification times, sorted entries and no build stamps, so the same
// inputs and toolchain give the same image digest.
//
// Layer content:
//
//	/app/<name>   the binary (0755), the image entrypoint; <name> is the last
//	              element of Spec.Package
//	/etc/passwd   root and nobody (65534)
//	/etc/group    root and nogroup (65534)
//	/tmp          empty, mode 1777
//	Spec.Files    extra regular files, mode 0644
package ociimage
