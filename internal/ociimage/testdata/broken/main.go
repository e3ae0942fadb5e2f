// Package main does not compile, on purpose: it checks that ociimage
// reports go build's own message.
package main

func main() {
	undefinedOnPurpose()
}
