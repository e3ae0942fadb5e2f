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
//	| mining      | PCI device id of a CMP card (cmpDeviceIDs), or "CMP" in the name       | CMP 170HX (0x20c2), "NVIDIA Graphics Device" with a CMP id |
//	| consumer    | brand GeForce/GeForce RTX/Titan/Titan RTX, or "GeForce"/"TITAN" in the name | NVIDIA GeForce RTX 3080, TITAN RTX |
//	| workstation | brand Quadro/Quadro RTX/NVIDIA RTX/NVS, or "Quadro", "RTX A<digits>", "RTX PRO", "Ada Generation", T400/T600/T1000 in the name | RTX A6000, NVIDIA RTX 6000 Ada Generation |
//	| datacenter  | brand Tesla, or a datacenter model token in the name (A100, H100, A40, L40S, T4, ..., see datacenterModels) | NVIDIA A100-SXM4-40GB, NVIDIA A40, Tesla T4 |
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
		case t == "QUADRO" || t == "NVS" || workstationModels[t]:
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
		if t == "TESLA" || datacenterModels[model] {
			return gpu.ClassDatacenter
		}
	}
	return gpu.ClassUnknown
}

// cmpDeviceIDs are the PCI device ids (vendor 0x10de) of NVIDIA's CMP
// mining boards, from the PCI ID repository: 30HX, 40HX, 50HX, 70HX, 90HX
// and both 170HX ids.
var cmpDeviceIDs = map[uint32]bool{
	0x2189: true, // TU116 CMP 30HX
	0x1f0b: true, // TU106 CMP 40HX
	0x1e09: true, // TU102 CMP 50HX
	0x248a: true, // GA104 CMP 70HX
	0x220d: true, // GA102 CMP 90HX
	0x2082: true, // GA100 CMP 170HX
	0x20c2: true, // GA100 CMP 170HX
}

// isCMP reads NVML's PciDeviceId, which is device<<16 | vendor.
func isCMP(pciDeviceID uint32) bool {
	return pciDeviceID&0xffff == 0x10de && cmpDeviceIDs[pciDeviceID>>16]
}

// datacenterModels are model tokens of datacenter boards.
var datacenterModels = map[string]bool{
	"K80": true, "M40": true, "M60": true, "P4": true, "P40": true, "P100": true,
	"V100": true, "V100S": true, "T4": true,
	"A2": true, "A10": true, "A10G": true, "A16": true, "A30": true, "A40": true, "A100": true, "A800": true,
	"L4": true, "L20": true, "L40": true, "L40S": true,
	"H20": true, "H100": true, "H200": true, "H800": true, "GH200": true,
	"B100": true, "B200": true, "GB200": true, "B300": true, "GB300": true,
}

// workstationModels are workstation boards whose names carry no brand word.
var workstationModels = map[string]bool{"T400": true, "T600": true, "T1000": true, "T1200": true}

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
