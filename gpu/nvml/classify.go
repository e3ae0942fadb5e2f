//go:build cgo

package nvml

import (
	"strings"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpufarm/gpufarm/gpu"
)

// classify decides what market a card was built for. NVML has no such
// field, and its brand is coarse (A100, H100 and RTX A6000 boards may all
// report BRAND_NVIDIA or BRAND_NVIDIA_RTX), so the name and the PCI device
// id decide too. The rules, first match wins:
//
//	| class       | rule                                                                  | examples                              |
//	|-------------|-----------------------------------------------------------------------|---------------------------------------|
//	| mining      | PCI device id of a CMP card (isCMP), or "CMP" in the name             | CMP 170HX (0x20c2), "NVIDIA Graphics Device" with a CMP id |
//	| consumer    | brand GeForce/GeForce RTX/Titan/Titan RTX, or "GeForce"/"TITAN" in the name | NVIDIA GeForce RTX 3080, TITAN RTX |
//	| workstation | brand Quadro/Quadro RTX/NVIDIA RTX/NVS, or "Quadro", "RTX A<digits>", "RTX PRO", "Ada Generation", T400/T600/T1000 in the name | RTX A6000, NVIDIA RTX 6000 Ada Generation |
//	| datacenter  | brand Tesla, or a datacenter model token in the name (A100, H100, A40, L40S, T4, ..., see isDatacenterModel) | NVIDIA A100-SXM4-40GB, NVIDIA A40, Tesla T4 |
//	| unknown     | anything else, e.g. "NVIDIA Graphics Device" without a CMP id          |                                       |
//
// Mining comes first because CMP boards may report a GeForce or plain
// NVIDIA brand and often name themselves "NVIDIA Graphics Device".
func classify(brand gonvml.BrandType, brandOK bool, name string, pciDeviceID uint32) gpu.Class {
	if isCMP(pciDeviceID) || hasToken(name, "CMP") {
		return gpu.ClassMining
	}
	if brandOK {
		switch brand {
		case gonvml.BRAND_GEFORCE, gonvml.BRAND_GEFORCE_RTX, gonvml.BRAND_TITAN, gonvml.BRAND_TITAN_RTX:
			return gpu.ClassConsumer
		case gonvml.BRAND_QUADRO, gonvml.BRAND_QUADRO_RTX, gonvml.BRAND_NVIDIA_RTX, gonvml.BRAND_NVS:
			return gpu.ClassWorkstation
		case gonvml.BRAND_TESLA:
			return gpu.ClassDatacenter
		}
	}
	toks := tokens(name)
	for _, t := range toks {
		if t == "GEFORCE" || t == "TITAN" {
			return gpu.ClassConsumer
		}
	}
	for i, t := range toks {
		switch {
		case t == "QUADRO" || t == "NVS" || isWorkstationModel(t):
			return gpu.ClassWorkstation
		case t == "ADA" && i > 0: // "RTX 6000 Ada Generation", "RTX 2000 Ada"
			return gpu.ClassWorkstation
		case t == "RTX" && i+1 < len(toks):
			next := toks[i+1]
			if next == "PRO" || (len(next) > 1 && next[0] == 'A' && isDigits(next[1:])) {
				return gpu.ClassWorkstation
			}
		}
	}
	for _, t := range toks {
		model, _, _ := strings.Cut(t, "-") // "A100-SXM4-40GB" -> "A100"
		if t == "TESLA" || isDatacenterModel(model) {
			return gpu.ClassDatacenter
		}
	}
	return gpu.ClassUnknown
}

// isCMP reports whether NVML's PciDeviceId (device<<16 | vendor) is one of
// NVIDIA's CMP mining boards, from the PCI ID repository: 30HX, 40HX, 50HX,
// 70HX, 90HX and both 170HX ids. A switch, not a map, so no package state
// can be changed.
func isCMP(pciDeviceID uint32) bool {
	if pciDeviceID&0xffff != 0x10de {
		return false
	}
	switch pciDeviceID >> 16 {
	case 0x2189, // TU116 CMP 30HX
		0x1f0b, // TU106 CMP 40HX
		0x1e09, // TU102 CMP 50HX
		0x248a, // GA104 CMP 70HX
		0x220d, // GA102 CMP 90HX
		0x2082, // GA100 CMP 170HX
		0x20c2: // GA100 CMP 170HX
		return true
	}
	return false
}

// isDatacenterModel reports whether tok is the model token of a datacenter
// board.
func isDatacenterModel(tok string) bool {
	switch tok {
	case "K80", "M40", "M60", "P4", "P40", "P100",
		"V100", "V100S", "T4",
		"A2", "A10", "A10G", "A16", "A30", "A40", "A100", "A800",
		"L4", "L20", "L40", "L40S",
		"H20", "H100", "H200", "H800", "GH200",
		"B100", "B200", "GB200", "B300", "GB300":
		return true
	}
	return false
}

// isWorkstationModel reports whether tok is a workstation board whose name
// carries no brand word.
func isWorkstationModel(tok string) bool {
	switch tok {
	case "T400", "T600", "T1000", "T1200":
		return true
	}
	return false
}

// tokens splits a product name into upper-case words.
func tokens(name string) []string {
	return strings.Fields(strings.ToUpper(name))
}

func hasToken(name, tok string) bool {
	for _, t := range tokens(name) {
		if t == tok {
			return true
		}
	}
	return false
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
