// SPDX-License-Identifier: GPL-2.0
/* skm_dkms_hello: built by the real dkms in the DKMS role's tests; the role must make DKMS sign it. */
#include <linux/init.h>
#include <linux/module.h>

static int __init skm_dkms_hello_init(void)
{
	pr_info("skm_dkms_hello: loaded\n");
	return 0;
}

static void __exit skm_dkms_hello_exit(void)
{
	pr_info("skm_dkms_hello: unloaded\n");
}

module_init(skm_dkms_hello_init);
module_exit(skm_dkms_hello_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("skm.modsign DKMS role test module");
