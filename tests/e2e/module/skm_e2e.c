// SPDX-License-Identifier: GPL-2.0
/*
 * skm_e2e: the module the e2e run signs in many ways. When the kernel lets it run, it reports what the
 * kernel itself concluded about its signature (struct module.sig_ok), so the run can check that a loaded
 * module was loaded *because* its signature verified, not because enforcement was off.
 */
#include <linux/init.h>
#include <linux/module.h>

static int __init skm_e2e_init(void)
{
#ifdef CONFIG_MODULE_SIG
	pr_info("skm_e2e: running, sig_ok=%d\n", THIS_MODULE->sig_ok);
#else
	pr_info("skm_e2e: running, kernel without CONFIG_MODULE_SIG\n");
#endif
	return 0;
}
module_init(skm_e2e_init);

static void __exit skm_e2e_exit(void)
{
}
module_exit(skm_e2e_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("skm.modsign end-to-end test module");
